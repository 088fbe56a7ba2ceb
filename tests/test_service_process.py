"""Local server processes: ready when the probe says so, early exits and timeouts reported, stopped
with their process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adas.service_process import start_service, stop_service, wait_until_ready


class NotReady(Exception):
    pass


def _not_ready(code: int | None) -> NotReady:
    return NotReady(f"exit code {code}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes (its parent, this test, has not reaped it yet).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_ready_when_the_probe_answers_then_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    # SIGTERM's default action, whatever disposition or mask the test process passed down (seen
    # blocked under CI's runner): this test is about what stop_service sends.
    script = (
        "import pathlib, signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
        "signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(60)\n"
    )
    with (tmp_path / "log").open("wb") as log:
        proc = start_service([sys.executable, "-c", script], log=log, env=os.environ)
    wait_until_ready(proc, marker.exists, since=time.perf_counter(), timeout_s=30, not_ready=_not_ready)
    assert os.getpgid(proc.pid) == proc.pid  # a session of its own
    code = stop_service(proc, stop_signal=signal.SIGTERM, timeout_s=5, reap_group=False)
    assert code == -signal.SIGTERM


def test_an_early_exit_is_reported_with_its_code(tmp_path: Path) -> None:
    with (tmp_path / "log").open("wb") as log:
        proc = start_service([sys.executable, "-c", "raise SystemExit(3)"], log=log, env=os.environ)
    with pytest.raises(NotReady, match="exit code 3"):
        wait_until_ready(proc, lambda: False, since=time.perf_counter(), timeout_s=30, not_ready=_not_ready)


def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    with (tmp_path / "log").open("wb") as log:
        proc = start_service([sys.executable, "-c", "import time; time.sleep(60)"], log=log, env=os.environ)
    try:
        with pytest.raises(NotReady, match="exit code None"):
            wait_until_ready(
                proc, lambda: False, since=time.perf_counter(), timeout_s=0.3, not_ready=_not_ready
            )
    finally:
        stop_service(proc, stop_signal=signal.SIGTERM, timeout_s=5, reap_group=False)


def test_a_server_ignoring_its_signal_is_killed_and_its_children_reaped(tmp_path: Path) -> None:
    child_pid = tmp_path / "child"
    # Ignores SIGINT (a server stuck in shutdown) and forks a child that would outlive it.
    script = (
        "import os, signal, subprocess, sys, time, pathlib\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(child_pid)!r}).write_text(str(c.pid))\n"
        "time.sleep(60)\n"
    )
    with (tmp_path / "log").open("wb") as log:
        proc = start_service([sys.executable, "-c", script], log=log, env=os.environ)
    wait_until_ready(
        proc, lambda: child_pid.exists() and child_pid.read_text() != "", since=time.perf_counter(),
        timeout_s=30, not_ready=_not_ready,
    )  # fmt: skip
    child = int(child_pid.read_text())
    code = stop_service(proc, stop_signal=signal.SIGINT, timeout_s=0.5, reap_group=True)
    assert code == -signal.SIGKILL
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_a_caller_ignoring_sigint_and_sigterm_does_not_make_its_server_deaf(tmp_path: Path) -> None:
    """A background job, nohup, or a Dagster run (which maps SIGTERM to SIGINT's disposition)
    ignores SIGINT; ignored signals are inherited across exec, yet the server stops gracefully."""
    marker, repo = tmp_path / "ready", Path(__file__).resolve().parents[1]
    server = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(60)"
    caller = (
        "import os, pathlib, signal, sys, time\n"
        f"sys.path.insert(0, {str(repo)!r})\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "from adas.service_process import start_service, stop_service, wait_until_ready\n"
        f"with open({str(tmp_path / 'log')!r}, 'wb') as log:\n"
        f"    p = start_service([sys.executable, '-c', {server!r}], log=log, env=os.environ)\n"
        f"wait_until_ready(p, pathlib.Path({str(marker)!r}).exists, since=time.perf_counter(), timeout_s=30,\n"
        "                 not_ready=lambda code: RuntimeError(code))\n"
        "print(stop_service(p, stop_signal=signal.SIGINT, timeout_s=10, reap_group=False))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", caller], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == str(-signal.SIGINT)  # Python's KeyboardInterrupt exit, not SIGKILL's -9
