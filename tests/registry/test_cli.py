"""``adas-registry`` for people: list, show, history, approve, promote, rollback, verify."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from adas.registry import rollout_step
from adas.registry.cli import main
from adas.registry.models import ROLES
from adas.storage import SIDECAR_SUFFIX, sha256_bytes
from tests.registry.test_promotion import _stub_runner
from tests.registry.world import TARGET, World, make_world

REPO = Path(__file__).resolve().parents[2]

PROMOTE = ("promote", "--version", "1.3.0", "--target", TARGET, "--actor", "rm", "--reason", "release")


@pytest.fixture
def world(
    registry_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_models: dict[str, Path]
) -> World:
    # ADAS_HOME = tmp_path: the CLI's artifact store and trust file are the world's.
    monkeypatch.setenv("ADAS_HOME", str(tmp_path))
    monkeypatch.delenv("ADAS_REGISTRY_URL", raising=False)
    monkeypatch.setenv("ADAS_ENV", "local")
    w = make_world(registry_url, tmp_path, onnx_models)
    assert w.oci is not None
    monkeypatch.setenv("ADAS_OCI_REGISTRY", w.oci.url)  # the registry the world's pack is in
    monkeypatch.setattr(rollout_step, "local_runner", lambda settings: _stub_runner())
    return w


def _cli(world: World, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["--url", world.registry.engine.url.render_as_string(hide_password=False), *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_list_show_approve_verify_promote_history_rollback(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _cli(world, capsys, "list")
    assert code == 0 and "1.2.0" in out and "1.3.0" in out and "production" in out and "staging" in out
    code, out = _cli(world, capsys, "show", "--version", "1.3.0", "--target", TARGET)
    assert code == 0 and f"entry #{world.candidate.id}: test-detector@1.3.0 for {TARGET}" in out
    assert "safety      not approved" in out
    code, out = _cli(world, capsys, "show", "--entry", str(world.candidate.id), "--card")
    assert out.startswith("# Model card: test-detector 1.3.0")

    code, out = _cli(world, capsys, "verify", "--version", "1.3.0", "--target", TARGET)
    assert code == 0 and "signatures verified with trusted key" in out and out.strip().endswith("OK")
    reference = world.candidate.body.pointers.oci_reference
    assert f"OCI: {reference}: manifest digest, 6 layers, the signature (.sig) and SBOM attestation (.att) and the signed pack verified" in out

    # Refused: no approvals yet; every missing role is named and the exit status says so.
    code, out = _cli(world, capsys, *PROMOTE)
    assert code == 1 and out.startswith("REFUSED") and all(f"approval: {r}" in out for r in ROLES)

    for role in ROLES:
        code, out = _cli(
            world,
            capsys,
            "approve",
            "--version",
            "1.3.0",
            "--role",
            role,
            "--actor",
            f"{role}-lead",
            "--reason",
            "ok",
        )
        assert code == 0 and f"{role} approved by {role}-lead" in out
    code, out = _cli(world, capsys, *PROMOTE)
    assert code == 0 and out.startswith(
        "PROMOTED: 1.3.0 is production on x86-cpu/fp32; 1.2.0 is the rollback"
    ), out
    assert "release_notes: file://" in out

    code, out = _cli(world, capsys, "--json", "history", "--target", TARGET)
    history = json.loads(out)
    assert history["version"] == "1.3.0" and [c["to"] for c in history["changes"]] == ["1.2.0", "1.3.0"]
    first = history["changes"][0]["at"]
    code, out = _cli(world, capsys, "history", "--target", TARGET, "--at", first)
    assert out.startswith(f"production on {TARGET} at ") and ": 1.2.0" in out.splitlines()[0]

    code, out = _cli(
        world, capsys, "rollback", "--target", TARGET, "--actor", "oncall", "--reason", "fleet issue"
    )
    assert code == 0 and "production on x86-cpu/fp32 is 1.2.0 again" in out
    code, out = _cli(world, capsys, "rollback", "--target", TARGET, "--actor", "oncall", "--reason", "again")
    assert code == 1 and "nothing to roll back to" in out


def test_verify_fails_on_a_tampered_artifact(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    target = Path(world.store.root) / world.built.pack.prefix / "model.onnx"
    target.write_bytes(target.read_bytes()[:-10] + b"0123456789")
    code, out = _cli(world, capsys, "verify", "--entry", str(world.candidate.id))
    assert (
        code == 1 and "FAIL model.onnx: " in out and "sha256 mismatch" in out and "VERIFICATION FAILED" in out
    )
    code, out = _cli(
        world, capsys, "approve", "--version", "9.9.9", "--role", "safety", "--actor", "a", "--reason", "b"
    )
    assert code == 1 and "no registry entry for version '9.9.9'" in out
    code, out = _cli(world, capsys, "approve", "--entry", str(world.candidate.id), "--role", "technical", "--actor", "a", "--reason", "b", "--waive-vulnerabilities", "x" * 50)  # fmt: skip
    assert code == 1 and "only the security role can waive" in out


def test_keys_init_rotate_list_and_verify_after_rotation(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    old = json.loads(_cli(world, capsys, "--json", "keys", "list")[1])["keys"]
    assert [k["now"] for k in old] == ["valid"]
    code, out = _cli(world, capsys, "keys", "init")
    assert code == 0 and f"key {old[0]['key_id']}: signing key present; already trusted in" in out
    code, out = _cli(world, capsys, "keys", "rotate")
    assert code == 0 and f"retired key {old[0]['key_id']} (its packs still verify)" in out
    code, out = _cli(world, capsys, "keys", "list")
    assert code == 0 and "expired" in out and "valid" in out
    # The candidate was signed by the retired key: it still verifies, naming that key.
    code, out = _cli(world, capsys, "verify", "--entry", str(world.candidate.id))
    assert code == 0 and f"with trusted key {old[0]['key_id']}" in out and out.strip().endswith("OK")
    # An empty trust root trusts nothing: refused, naming the key.
    empty = world.workdir / "empty.yaml"
    empty.write_text("version: 1\nkeys: []\n")
    code, out = _cli(
        world, capsys, "verify", "--entry", str(world.candidate.id), "--trusted-keys", str(empty)
    )
    assert code == 1 and f"signed by key {old[0]['key_id']}, which is not in {empty}" in out
    monkeypatch.setenv("ADAS_ENV", "production")
    code, out = _cli(world, capsys, "keys", "rotate")
    assert code == 1 and "manage the local key only" in out


def test_the_cli_runs_without_dagster(tmp_path: Path) -> None:
    """``adas-registry`` loads and runs a command without importing Dagster or the layers above
    the core (it reads the registry and the artifact store through the core alone)."""
    code = (
        "import sys; from adas.registry.cli import main; "
        f"rc = main(['--url', 'sqlite:///{tmp_path / 'r.db'}', 'list']); "
        "layers = ('dagster', 'dagster_aws', 'resources', 'sensors', 'jobs', 'adas_assets'); "
        "print(rc, sorted(m for m in sys.modules if m.split('.')[0] in layers))"
    )
    env = {"PATH": "/usr/bin:/bin", "ADAS_HOME": str(tmp_path / "home"), "ADAS_ENV": "local"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stdout


def test_promote_refuses_a_replay_frame_tampered_with_its_sidecar(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    """The canary's frames come from the dataset the entry was evaluated on, pinned through the
    entry (its eval_report.json names the dataset's file index), never through sidecars."""
    for role in ROLES:
        code, out = _cli(world, capsys, "approve", "--version", "1.3.0", "--role", role, "--actor", "a", "--reason", "ok")  # fmt: skip
        assert code == 0, out
    frame = Path(world.store.root) / "datasets/test-replay/images/replay/f000.png"
    pinned, evil = sha256_bytes(frame.read_bytes()), frame.read_bytes()[:-4] + b"evil"
    frame.write_bytes(evil)
    frame.with_name(frame.name + SIDECAR_SUFFIX).write_text(f"{sha256_bytes(evil)}  {frame.name}\n")
    code, out = _cli(world, capsys, *PROMOTE)
    assert code == 1 and frame.resolve().as_uri() in out, out
    assert f"expected {pinned}" in out and f"read {sha256_bytes(evil)}" in out
    code, out = _cli(world, capsys, "--json", "history", "--target", TARGET)
    assert json.loads(out)["version"] == "1.2.0"  # production did not move
