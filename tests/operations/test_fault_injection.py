"""SIGKILL a real run at random moments, again and again: nothing half-written is ever visible,
the registry verifies after every kill, and the run, resumed, ends where an uninterrupted run ends.

The run (:mod:`tests.operations.fault_run`) is the pipeline's write paths on the real core
code, in its own process group: bundle storage with the version claim, staging, export and the
engine build, the Triton repository and the signed pack, registration with approvals, and
promotion with its hooks. The test reads the run's ``STEP <phase> ...`` lines, picks a phase and
a moment inside it (seeded; the phase lengths come from an uninterrupted reference run) and
kills the whole process group with SIGKILL: no handler, no cleanup, like a node that dies.

After each kill:
* **no partial file under a final name**: every file of the artifact store is either a temporary
  name (``.<name>.<hex>.tmp``) or complete and hashing to its record; a record may precede its
  bytes (a new key's record lands first), never the reverse; every step record decodes;
* **the registry verifies**: the database is consistent (aliases equal their last move, target
  versions count their changes) and ``adas-registry verify`` passes for every entry;
* production is either untouched or the candidate, never anything in between.

Then a re-run completes and its content hashes equal the reference run's (see
:data:`VARIES_BY_DESIGN` for what may differ and why).

The CI variant kills 4 times; the nightly one 20 times (lives of 5 kills, one per phase).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import queue
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from adas.intake.contract import version_identity
from adas.packaging.local_oci_registry import stop_local_registry
from adas.packaging.triton_server import free_port
from adas.registry import cli
from adas.registry.store import RegistryStore
from adas.storage import SIDECAR_SUFFIX, LocalArtifactStore
from adas.values import decode_value

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PHASES = ("intake", "engine", "pack", "registry", "promotion")
TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
RUN_TIMEOUT_S = 600

# Pack files whose bytes differ between two uninterrupted runs of the same code on the same
# bundle, with the same key, by design; every other pinned file must be identical.
VARIES_BY_DESIGN = {
    # ECDSA signatures draw a random nonce: the same bytes signed twice give other signatures.
    ".sig": "ECDSA signatures are randomized",
    # The signed manifest states its signing time (the trust root judges keys by it).
    "pack_manifest.json": "records the signing time",
    # CycloneDX: a random serialNumber and the generation timestamp.
    "sbom.cdx.json": "random serial number and timestamp",
    # The scanner's report carries its run time (offline: its error, with a timestamp).
    "vulnerability_scan.json": "scan time",
    # Build timings and the scratch paths the engine was built in.
    "export_report.json": "build timings and scratch paths",
}


def _varies(rel: str) -> bool:
    return rel.endswith(".sig") or rel in VARIES_BY_DESIGN


@dataclass
class Home:
    root: Path
    # Its local OCI registry's port: the run publishes the pack there and promotion pulls it.
    oci_port: int = field(default_factory=free_port)

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def records(self) -> Path:
        return self.root / "fault-run"

    @property
    def registry_url(self) -> str:
        return f"sqlite:///{self.root / 'registry.db'}"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "ADAS_ENV",
                "ADAS_REGISTRY_URL",
                "ADAS_TRUSTED_KEYS",
                "ADAS_STORAGE_CONFIG",
                "ADAS_OCI_REGISTRY",
                "ADAS_OCI_NAMESPACE",
            )
        }
        return {
            **env,
            "ADAS_HOME": str(self.root),
            "ADAS_PACKAGING_CONFIG": str(REPO / "tests/packaging/fast_packaging.yaml"),
            "WANDB_MODE": "offline",
            "PYTHONUNBUFFERED": "1",
            "ADAS_OCI_REGISTRY_PORT": str(self.oci_port),
        }


def _new_home(path: Path, keys_from: Home | None = None) -> Home:
    """A fresh ADAS_HOME with a signing key enrolled in its trust file (``adas-registry keys
    init``), or the reference's keys copied (so that ``cosign.pub`` compares equal)."""
    home = Home(path)
    path.mkdir(parents=True)
    # The run leaves its registry daemon running (as the platform does): stopped at exit.
    atexit.register(stop_local_registry, path / "oci-registry")
    if keys_from is not None:
        shutil.copytree(keys_from.root / "keys", path / "keys")
        return home
    out = subprocess.run(
        [sys.executable, "-m", "adas.registry.cli", "keys", "init"],
        cwd=REPO,
        env=home.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return home


class Run:
    """The fault run in its own process group; its stdout lines arrive on a queue."""

    def __init__(self, home: Home, bundle: Path) -> None:
        self.log = open(home.root / "run.log", "a")  # noqa: SIM115 (closed in finish)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.operations.fault_run", str(bundle)],
            cwd=REPO,
            env=home.env(),
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            start_new_session=True,  # its own process group: the kill takes its children too
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next stdout line; None at the end of the output."""
        line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is not None:
            self.seen.append(line)
        return line

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def finish(self) -> int:
        try:
            return self.proc.wait(timeout=RUN_TIMEOUT_S)
        finally:
            self.log.close()

    @property
    def phase(self) -> str | None:
        steps = [line.split()[1] for line in self.seen if line.startswith("STEP ")]
        return steps[-1] if steps else None


def run_to_end(home: Home, bundle: Path) -> list[str]:
    run = Run(home, bundle)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while run.next_line(deadline) is not None:
            pass
    finally:
        code = run.finish()
    assert code == 0 and run.seen and run.seen[-1].startswith("DONE"), (
        f"exit {code}: {run.seen}\n" + (home.root / "run.log").read_text()[-3000:]
    )
    return run.seen


def run_and_kill(home: Home, bundle: Path, phase: str, delay_s: float) -> str:
    """Run until ``phase`` starts, wait ``delay_s``, SIGKILL the process group; the phase the
    run was in when it died (a later one if ``phase`` ended first)."""
    run = Run(home, bundle)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while (line := run.next_line(deadline)) is not None:
            if line.startswith(f"STEP {phase} "):
                time.sleep(delay_s)
                while not run.lines.empty():  # what it printed meanwhile tells where it died
                    run.next_line(deadline)
                run.kill()
                break
        else:
            code = run.finish()
            pytest.fail(
                f"the run ended (exit {code}) before phase {phase}: {run.seen}\n"
                + (home.root / "run.log").read_text()[-4000:]
            )
    finally:
        run.kill()
        code = run.finish()
    assert code == -signal.SIGKILL, f"exit {code}, expected SIGKILL: {run.seen}"
    return str(run.phase)


def phase_lengths(lines: list[str]) -> dict[str, float]:
    """Seconds from each phase's first step to the next phase's (or the end), from the run's
    ``STEP <phase> <step> <clock>`` and ``DONE <clock>`` lines."""
    starts: dict[str, float] = {}
    for line in lines:
        if line.startswith("STEP "):
            _, phase, _, clock = line.split()
            starts.setdefault(phase, float(clock))
    end = float(lines[-1].split()[1])
    order = [p for p in PHASES if p in starts]
    return {p: (starts[order[i + 1]] if i + 1 < len(order) else end) - starts[p] for i, p in enumerate(order)}


# --------------------------------------------------------------------------- invariants


def assert_no_partial_file(home: Home) -> None:
    """Every file under the artifact root is a temporary name, or complete and hashing to its
    record (a record without its bytes is allowed: a new key's record lands first); every step
    record decodes (written atomically)."""
    store = LocalArtifactStore(home.artifacts)
    problems = []
    for path in sorted(p for p in home.artifacts.rglob("*") if p.is_file()):
        rel = path.relative_to(home.artifacts).as_posix()
        if TEMP_NAME.match(path.name):
            continue
        if path.name.endswith(SIDECAR_SUFFIX):
            continue  # checked with its bytes; alone it is invisible to every reader
        if not path.with_name(path.name + SIDECAR_SUFFIX).is_file():
            problems.append(f"{rel}: bytes under a final name without a hash record")
            continue
        try:
            store.verify(rel)
        except Exception as exc:
            problems.append(f"{rel}: {exc}")
    for record in sorted(home.records.glob("*.json")) if home.records.is_dir() else []:
        try:
            decode_value(record.read_bytes())
        except Exception as exc:
            problems.append(f"step record {record.name}: {exc}")
    assert not problems, "\n".join(problems)


def assert_registry_verifies(home: Home, monkeypatch: pytest.MonkeyPatch) -> int:
    """The registry database is consistent and ``adas-registry verify`` passes for every entry;
    production is untouched or the candidate. The number of entries."""
    if not (home.root / "registry.db").exists():
        return 0
    registry = RegistryStore(home.registry_url)
    try:
        with registry.engine.connect() as conn:  # SQLite's own check of the file (WAL replayed)
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
        assert registry.consistency_problems() == []
        entries = registry.entries()
        for target in registry.targets():
            production = registry.alias_entry(target, "production")
            assert production is None or production.id in {e.id for e in entries if not e.body.adopted}
    finally:
        registry.dispose()
    with monkeypatch.context() as mp:
        for k, v in home.env().items():
            mp.setenv(k, v)
        for k in ("ADAS_ENV", "ADAS_REGISTRY_URL", "ADAS_TRUSTED_KEYS"):
            mp.delenv(k, raising=False)
        for entry in entries:
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                code = cli.main(["verify", "--entry", str(entry.id)])
            assert code == 0, f"adas-registry verify --entry {entry.id}:\n{out.getvalue()}"
    return len(entries)


def fingerprint(home: Home) -> dict[str, str]:
    """What must be identical to an uninterrupted run: the stored bundle, the version claim, the
    export and the engine, every pinned pack file but :data:`VARIES_BY_DESIGN`, and production."""
    candidate = decode_value((home.records / "candidate.json").read_bytes())
    export = decode_value((home.records / "export.json").read_bytes())
    engine = decode_value((home.records / "engine.json").read_bytes())
    fp = {f"bundle/{rel}": f.sha256 for rel, f in candidate.files.items()}
    fp["bundle"] = candidate.bundle_sha256
    fp["export/model.onnx"] = export.onnx.sha256
    fp["export/torch_program"] = export.torch_program.sha256
    fp["engine"] = engine.engine.sha256
    registry = RegistryStore(home.registry_url)
    try:
        claim = registry.version_claim(candidate.contract.task, version_identity(candidate.contract.version))
        fp["claim"] = claim.bundle_sha256 if claim else "none"
        (entry,) = registry.entries()
        fp["entry"] = f"{entry.body.model_name}@{entry.version} on {entry.target}"
        for rel, pointer in entry.body.pointers.artifacts.items():
            if not _varies(rel):
                fp[f"pack/{rel}"] = pointer.sha256
        production = registry.alias_entry(entry.target, "production")
        fp["production"] = production.version if production else "none"
        completed = registry.events(target=entry.target, kinds=["promotion_completed"])
        fp["promotions completed"] = str(len(completed))
    finally:
        registry.dispose()
    return fp


# --------------------------------------------------------------------------- the tests


@dataclass
class Reference:
    home: Home
    lengths: dict[str, float]
    fingerprint: dict[str, str]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, bundle_template: Path) -> Iterator[Reference]:
    home = _new_home(tmp_path_factory.mktemp("fault") / "reference")
    lines = run_to_end(home, bundle_template)
    yield Reference(home, phase_lengths(lines), fingerprint(home))


# The steps of each phase, as the fault run records them (a phase is done once all are recorded).
PHASE_STEPS = {
    "intake": ("candidate",),
    "engine": ("staged", "export", "engine"),
    "pack": ("triton", "pack", "published"),
    "registry": ("entry",),
    "promotion": ("promoted",),
}


def _pending(home: Home, phase: str) -> bool:
    return not all((home.records / f"{step}.json").is_file() for step in PHASE_STEPS[phase])


def _kill_repeatedly(
    reference: Reference,
    bundle: Path,
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    kills: int,
    phases_per_life: int,
    seed: int,
) -> list[str]:
    """Kill runs ``kills`` times: per life (a fresh ADAS_HOME), at a seeded sample of phases in
    pipeline order, each run resuming the last; then a run to the end, compared with the
    reference. A kill that lands after its phase ended moves the next one on to the first
    phase still to do."""
    rng = random.Random(seed)
    killed_in: list[str] = []
    life = 0
    while len(killed_in) < kills:
        home = _new_home(root / f"life-{life}", keys_from=reference.home)
        for planned in sorted(rng.sample(PHASES, phases_per_life), key=PHASES.index):
            phase = next((p for p in PHASES[PHASES.index(planned) :] if _pending(home, p)), None)
            if phase is None or len(killed_in) == kills:
                break
            # A moment inside the phase: up to 80% of its length in the reference run.
            delay = rng.uniform(0.0, 0.8 * reference.lengths[phase])
            killed_in.append(run_and_kill(home, bundle, phase, delay))
            assert_no_partial_file(home)
            assert_registry_verifies(home, monkeypatch)
        run_to_end(home, bundle)
        assert_no_partial_file(home)
        assert assert_registry_verifies(home, monkeypatch) == 1
        assert fingerprint(home) == reference.fingerprint, f"life {life}, killed in {killed_in}"
        life += 1
    return killed_in


def test_the_reference_run_is_deterministic_where_the_comparison_needs_it(reference: Reference) -> None:
    """The fingerprint covers the stored bundle, the export, the engine and the pack, and
    production is the candidate after one completed promotion."""
    fp = reference.fingerprint
    assert fp["production"] == "0.1.0" and fp["promotions completed"] == "1"
    assert fp["claim"] == fp["bundle"]
    assert {"pack/model.onnx", "pack/inference_config.json", "pack/cosign.pub"} <= set(fp)
    assert fp["pack/model.onnx"] == fp["engine"]
    assert set(reference.lengths) == set(PHASES)


def test_four_sigkills_leave_nothing_partial_and_the_rerun_matches(
    reference: Reference, bundle_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_in = _kill_repeatedly(
        reference, bundle_template, tmp_path, monkeypatch, kills=4, phases_per_life=4, seed=18
    )
    print(f"killed in: {killed_in}")
    assert len(killed_in) == 4


@pytest.mark.nightly
def test_twenty_sigkills_across_every_phase(
    reference: Reference, bundle_template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    killed_in = _kill_repeatedly(
        reference, bundle_template, tmp_path, monkeypatch, kills=20, phases_per_life=5, seed=2018
    )
    print(f"killed in: {killed_in}")
    assert len(killed_in) == 20
    # Aimed at every phase of every life: each was hit (bundle storage, engine build, pack
    # writing, registry writes, promotion).
    assert set(killed_in) == set(PHASES), killed_in
