"""The sandbox untrusted models run in, tried for real (bubblewrap): what it hides and forbids."""

from pathlib import Path

from adas.sandbox import run_python_module


def test_the_sandbox_hides_adas_home_and_forbids_writes_and_sockets(adas_home: Path, tmp_path: Path) -> None:
    secret = adas_home / "keys" / "cosign.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("private key")
    bundle, outside = tmp_path / "bundle", tmp_path / "outside.txt"
    bundle.mkdir()
    run = run_python_module(
        "tests.sandbox_probe", [str(secret), str(outside)], bundle=bundle, scratch=tmp_path / "scratch"
    )
    assert run.result is not None, run.stderr[-2000:]
    assert run.result["read_secret"].startswith("FileNotFoundError"), run.result  # ADAS_HOME is masked
    assert "not allowed in the intake sandbox" in run.result["write_outside"], run.result
    assert run.result["write_scratch"] == "allowed"
    assert "not allowed in the intake sandbox" in run.result["socket"], run.result
    assert not outside.exists() and (tmp_path / "scratch" / "ok").exists()
