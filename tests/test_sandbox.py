"""The sandbox untrusted models run in, tried for real (bubblewrap): what it hides and forbids."""

import errno
import os
from pathlib import Path

import pytest

from adas.sandbox import (
    SandboxError,
    SandboxLimits,
    Standby,
    StandbyPool,
    copy_scratch_file,
    read_scratch_file,
    run_python_module,
    start_python_module,
)


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


def test_a_served_worker_sees_a_bundle_under_adas_home_and_its_inputs_read_only(
    adas_home: Path, tmp_path: Path
) -> None:
    secret = adas_home / "keys" / "cosign.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("private key")
    # Packaging's bundle lives in the artifact store, under the masked ADAS_HOME.
    bundle = adas_home / "artifacts" / "candidates" / "0.1.0"
    bundle.mkdir(parents=True)
    (bundle / "model.pt2").write_text("weights")
    inputs, scratch, outside = tmp_path / "inputs", tmp_path / "scratch", tmp_path / "outside.txt"
    inputs.mkdir()
    (inputs / "batch.npy").write_text("batch")
    with start_python_module(
        "tests.sandbox_server_probe", [], bundle=bundle, scratch=scratch, read_only=[inputs]
    ) as worker:
        assert worker.receive(60) == {"ready": True}  # past the model's own prints and a forged line

        def outcome(op: str, path: Path) -> str:
            return str(worker.request({"op": op, "path": str(path)}, 60)["outcome"])

        assert outcome("read", bundle / "model.pt2") == "weights"
        assert outcome("read", inputs / "batch.npy") == "batch"
        assert outcome("read", secret).startswith("FileNotFoundError")  # the rest of ADAS_HOME is masked
        for path in (bundle / "model.pt2", inputs / "batch.npy", outside):
            assert "not allowed in the intake sandbox" in outcome("write", path)
            assert outcome("native_write", path) == f"errno {errno.EROFS}"  # past the hook: the mounts
        assert outcome("write", scratch / "out.npy") == "allowed"
        assert outcome("native_write", scratch / "native.npy") == "allowed"
        with pytest.raises(SandboxError, match="exited without an answer: KeyError: 'crash'"):
            worker.request({"op": "crash", "path": "x"}, 60)
    assert (bundle / "model.pt2").read_text() == "weights" and (inputs / "batch.npy").read_text() == "batch"
    assert not outside.exists() and sorted(p.name for p in scratch.iterdir()) == ["native.npy", "out.npy"]


def test_files_come_back_from_scratch_only_as_bounded_regular_files(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "graph.onnx").write_bytes(b"x" * 100)
    assert read_scratch_file(scratch, "graph.onnx", 100) == b"x" * 100
    copied = copy_scratch_file(scratch, "graph.onnx", tmp_path / "copy.onnx", 100)
    assert copied.read_bytes() == b"x" * 100
    with pytest.raises(SandboxError, match="over the 99 byte limit"):
        copy_scratch_file(scratch, "graph.onnx", tmp_path / "short.onnx", 99)
    assert not (tmp_path / "short.onnx").exists()
    (tmp_path / "signing.key").write_text("secret")
    (scratch / "link.onnx").symlink_to(tmp_path / "signing.key")
    os.mkfifo(scratch / "pipe.onnx")
    os.link(tmp_path / "signing.key", scratch / "hard.onnx")
    for name, reason in {
        "link.onnx": "without following links",
        "pipe.onnx": "not a regular file",
        "hard.onnx": "2 links",
        "../signing.key": "not a plain file name",
        "gone.onnx": "missing",
    }.items():
        with pytest.raises(SandboxError, match=reason):
            read_scratch_file(scratch, name, 1 << 20)


_LIMITS = SandboxLimits(
    memory_bytes=3 << 30,
    cpu_seconds=77,
    file_size_bytes=5 << 20,
    open_files=99,
    processes=333,
    wall_seconds=120,
)


def _job(standby: Standby, job: dict) -> dict:
    standby.worker.send(job)
    return standby.worker.final_result(120)


def test_standbys_started_ahead_see_only_their_own_folders_under_their_limits(tmp_path: Path) -> None:
    common = tmp_path / "standbys"
    common.mkdir()
    a = Standby("tests.sandbox_standby_probe", [], root=common / "job-a", limits=_LIMITS, env=None)
    b = Standby("tests.sandbox_standby_probe", [], root=common / "job-b", limits=_LIMITS, env=None)
    try:
        a.wait_ready(120)
        b.wait_ready(120)
        (a.scratch / "secret").write_text("a's scratch")
        source = tmp_path / "copy"
        (source / "sub").mkdir(parents=True)
        (source / "model.pt2").write_text("weights")
        (source / "sub" / "extra.txt").write_text("extra")
        b.deliver(source)
        outside = tmp_path / "outside.txt"
        reply = _job(b, {"outside": str(outside), "other": str(a.scratch / "secret")})
        assert "forged" not in reply  # the worker's own (last) line, not the one printed before it
        assert reply["model"] == "weights" and reply["bundle"] == str(b.bundle)
        assert "not allowed in the intake sandbox" in reply["write_bundle"], reply
        assert "not allowed in the intake sandbox" in reply["write_outside"], reply
        assert reply["write_scratch"] == "allowed"
        assert reply["read_other"].startswith("FileNotFoundError"), reply  # another standby's scratch
        assert reply["list_other"].startswith("FileNotFoundError"), reply
        assert reply["limits"] == {
            "RLIMIT_AS": 3 << 30,
            "RLIMIT_CPU": 77,
            "RLIMIT_FSIZE": 5 << 20,
            "RLIMIT_NOFILE": 99,
            "RLIMIT_NPROC": 333,
        }
        assert not outside.exists() and (b.scratch / "mine").exists()
        assert (source / "model.pt2").read_text() == "weights"
        with pytest.raises(SandboxError, match="one job only"):
            b.deliver(source)
    finally:
        a.close()
        b.close()
    assert not common.exists() or not any(common.iterdir())  # each standby's folders deleted


def test_a_pool_survives_a_crashing_job_and_never_reuses_a_standby(tmp_path: Path) -> None:
    pool = StandbyPool("tests.sandbox_standby_probe", limits=_LIMITS, root=tmp_path / "pool")
    try:
        pool.wait_ready(120)
        with pool.take(120) as first, pytest.raises(SandboxError, match="exited without an answer"):
            _job(first, {"crash": True})
        assert not first.root.exists() and first.worker.returncode() is not None
        with pool.take(120) as second:  # a fresh sandboxed process, started after the crash
            assert second is not first and second.root != first.root
            reply = _job(second, {"outside": str(tmp_path / "x"), "other": str(first.scratch / "y")})
            assert reply["write_scratch"] == "allowed"
        assert second.worker.returncode() is not None
    finally:
        pool.close()
    assert not (tmp_path / "pool").exists()


def test_a_standby_started_under_another_adas_home_is_retired_and_a_fork_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home-a").mkdir()
    (tmp_path / "home-b").mkdir()
    monkeypatch.setenv("ADAS_HOME", str(tmp_path / "home-a"))
    pool = StandbyPool("tests.sandbox_standby_probe", limits=_LIMITS, root=tmp_path / "pool")
    try:
        pool.wait_ready(120)
        waiting = pool._next
        assert waiting is not None and waiting.usable()
        pid = os.fork()
        if pid == 0:  # a forked process closing its copy of the pool stops and deletes nothing
            pool.close()
            os._exit(0)
        os.waitpid(pid, 0)
        assert waiting.usable() and waiting.bundle.is_dir()
        # Its sandbox masked home-a: with ADAS_HOME now home-b it would not hide it, so it is not used.
        monkeypatch.setenv("ADAS_HOME", str(tmp_path / "home-b"))
        assert not waiting.usable()
        with pool.take(120) as standby:
            assert standby is not waiting and standby.masks != waiting.masks
        assert not waiting.root.exists() and waiting.worker.returncode() is not None
    finally:
        pool.close()
