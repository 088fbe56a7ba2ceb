"""A real run of the pipeline's write paths, resumable, to be SIGKILLed by the fault-injection test.

``python -m tests.operations.fault_run <bundle>`` (``ADAS_HOME`` set) takes the bundle in (version
claim in the registry database, atomic bundle storage), stages and exports it, builds the
x86-cpu/fp32 engine, writes the Triton repository and the signed pack, registers the entry with
its approvals and promotes it to production (a first deployment: governance, lock, plan,
finalize, hooks). Each step calls the core use-case the Dagster asset calls.

Like Dagster, a re-run does not redo a step that completed: each step's result is recorded
(``$ADAS_HOME/fault-run/<step>.json``, written atomically) after its outputs are stored, the
way a materialization is recorded after the asset's outputs. A step killed midway has no
record and runs again; what it had stored is then rewritten, proven identical or published
beside (write-once packs).

Stdout carries one line per step that runs: ``STEP <phase> <step> <monotonic clock>``, flushed,
so that the test can aim its SIGKILL at a phase; ``DONE <monotonic clock>`` at the end. Evaluation and simulation are not part of
these write paths: their verdicts are small green records stored the way their assets store
them, so the entry can be registered and promoted.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from adas.catalog import load_catalog
from adas.cell import Cell
from adas.evaluation.gates import GateVerdict, Latency, MetricsSnapshot, SliceStat
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.intake.candidates import screen_bundle, store_bundle
from adas.intake.refs import CandidateRef, StoredFile
from adas.packaging.build import build_engine, export_candidate
from adas.packaging.config import packaging_config_from_env
from adas.packaging.oci_publication import publish_cell
from adas.packaging.oci_settings import OciRegistrySettings
from adas.packaging.refs import (
    EngineRef,
    ExportRef,
    PackRef,
    PublishedPackRef,
    StagedRef,
    TritonRepositoryRef,
)
from adas.packaging.serving import build_repository, package_cell
from adas.packaging.signing import load_signing_key
from adas.packaging.staging import stage_candidate
from adas.packaging.trust import load_trust_file, trust_file_path
from adas.registry.entries import entry_from_pack
from adas.registry.models import ROLES
from adas.registry.production import AliasMoveRequest, move_production_alias
from adas.registry.registration import register_entry
from adas.registry.settings import RegistrySettings
from adas.registry.store import RegistryStore
from adas.settings import AdasHome
from adas.simulation.refs import SimVerdictRef
from adas.storage import ArtifactStore, StoreSettings, atomic_write_bytes
from adas.values import decode_value, encode_value

CELL = Cell("x86-cpu", "fp32")
ACTOR = "fault-run"
RECORDS = "fault-run"


def _step(home: AdasHome, phase: str, name: str, run: Callable[[], Any]) -> Any:
    """The recorded result of step ``name``, or run it, record its result, return it."""
    record = home.root / RECORDS / f"{name}.json"
    if record.is_file():
        return decode_value(record.read_bytes())
    print(f"STEP {phase} {name} {time.monotonic():.3f}", flush=True)
    value = run()
    atomic_write_bytes(record, encode_value(value))
    return value


def _put(store: ArtifactStore, key: str, data: bytes) -> StoredFile:
    s = store.put_bytes(key, data)
    return StoredFile(key=s.key, uri=s.uri, sha256=s.sha256, size=s.size)


def take_in(store: ArtifactStore, registry: RegistryStore, bundle: Path) -> CandidateRef:
    with tempfile.TemporaryDirectory(prefix="intake-") as work:
        screened = screen_bundle(store, bundle, Path(work), registry)
        return store_bundle(store, screened.bundle, f"{ACTOR}:{bundle.name}", registry)


def build_cell_engine(store: ArtifactStore, export: ExportRef) -> EngineRef:
    with tempfile.TemporaryDirectory(prefix="engine-") as work:
        return build_engine(
            store,
            export,
            CELL.device,
            CELL.precision,
            catalog=load_catalog(),
            config=packaging_config_from_env(),
            calibration_frames=None,
            workdir=Path(work),
        ).ref


def write_repository(store: ArtifactStore, engine: EngineRef) -> TritonRepositoryRef:
    with tempfile.TemporaryDirectory(prefix="triton-") as work:
        return build_repository(store, engine, Path(work), "python-onnxruntime").ref


def green_verdicts(store: ArtifactStore, engine: EngineRef) -> tuple[GateRef, SimVerdictRef, EvalReportRef]:
    """Green evaluation and simulation records of the engine, stored where their assets store them."""
    version, prefix = engine.contract.version, engine.prefix
    verdict = GateVerdict(
        passed=True,
        verdict="green",
        gates=[],
        failing_slices=[],
        rationale="all gates pass (fault-injection run)",
        baseline_available=False,
        gates_version=1,
        gates_sha256="0" * 64,
    )
    cell = {"device": CELL.device, "precision": CELL.precision, "version": version}
    gate = GateRef(
        **cell,
        production_version=None,
        passed=True,
        verdict=verdict,
        files={
            "gate_verdict.json": _put(
                store, f"{prefix}/evaluation/gate_verdict.json", verdict.model_dump_json().encode()
            )
        },
    )
    sim = SimVerdictRef(
        **cell,
        production_version="none",
        green=True,
        verdict="green",
        rationale="no collisions (fault-injection run)",
        checks=[],
        files={"sim_verdict.json": _put(store, f"{prefix}/sim/sim_verdict.json", b'{"verdict": "green"}')},
    )
    stat = SliceStat(AP=0.6, images=40, critical=True)
    report = EvalReportRef(
        device=CELL.device,
        precision=CELL.precision,
        engine=engine,
        production_engine=None,
        dataset_tag=engine.candidate.lineage.dataset_tag,
        split="golden_test",
        frames=40,
        profile="standard",
        prefix=f"{prefix}/evaluation",
        files={"eval_report.json": _put(store, f"{prefix}/evaluation/eval_report.json", b"{}")},
        snapshot=MetricsSnapshot(version=version, AP=0.6, per_class_AP={}, slices={"weather=clear": stat}),
        production_snapshot=None,
        latency=Latency(p50_ms=3.0, p95_ms=4.0, source="ort", budget_p95_ms=25.0),
    )
    return gate, sim, report


def register(
    store: ArtifactStore, registry: RegistryStore, pack: PackRef, published: PublishedPackRef
) -> int:
    gate, sim, report = green_verdicts(store, pack.engine)
    body = entry_from_pack(store, pack, gate, sim, report, load_catalog(), published=published)
    entry, _ = register_entry(registry, body, actor=ACTOR)
    for role in ROLES:
        registry.approve(entry.id, role, actor=f"{role}-lead", reason="reviewed (fault-injection run)")
    if entry.body.security.vulnerability_status != "scanned":
        registry.waive_vulnerabilities(
            entry.id,
            actor="security-lead",
            justification="no vulnerability database offline; the fault-injection run ships nothing",
        )
    return entry.id


def promote(settings: RegistrySettings, store: ArtifactStore, entry_id: int) -> str:
    # Deployed by pulling the entry's pinned digest from the local registry.
    promotion = settings.promotion(store, load_catalog(), OciRegistrySettings.from_env("local"))
    entry = promotion.registry.get_entry(entry_id)
    request = AliasMoveRequest(
        action="promote",
        target=entry.target,
        actor=ACTOR,
        reason="fault-injection run",
        idempotency_key=f"promote:{entry.target}:{entry.version}",
    )
    result = move_production_alias(promotion, request, entry=entry).result
    if result.status != "promoted":
        raise SystemExit(f"promotion {result.status}: {result.message}")
    return result.status


def main(bundle: Path) -> None:
    home = AdasHome.from_env().ensure()
    store = StoreSettings.from_env("local", home.artifacts).build()
    settings = RegistrySettings.from_env("local", home)
    registry = settings.store()
    config = packaging_config_from_env()
    candidate = _step(home, "intake", "candidate", lambda: take_in(store, registry, bundle))
    staged: StagedRef = _step(home, "engine", "staged", lambda: stage_candidate(store, candidate).ref)
    export: ExportRef = _step(
        home, "engine", "export", lambda: export_candidate(store, candidate, config).ref
    )
    engine: EngineRef = _step(home, "engine", "engine", lambda: build_cell_engine(store, export))
    triton = _step(home, "pack", "triton", lambda: write_repository(store, engine))
    pack: PackRef = _step(
        home, "pack", "pack", lambda: package_cell(store, engine, triton, export, staged, log=print).ref
    )
    oci = OciRegistrySettings.from_env("local", home)
    published: PublishedPackRef = _step(
        home,
        "pack",
        "published",
        lambda: publish_cell(
            store,
            pack,
            oci.client(),
            signer=load_signing_key(home.keys),
            trust=load_trust_file(trust_file_path(home)),
        ),
    )
    entry_id = _step(home, "registry", "entry", lambda: register(store, registry, pack, published))
    _step(home, "promotion", "promoted", lambda: promote(settings, store, entry_id))
    print(f"DONE {time.monotonic():.3f}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("WANDB_MODE", "offline")
    main(Path(sys.argv[1]))
