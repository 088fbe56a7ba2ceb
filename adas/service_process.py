"""A local server process the platform starts and stops (the Triton server, the OCI registry).

Started in a session of its own, so a Ctrl-C meant for the caller does not kill it mid-request and
every process it forks shares its process group, which ``stop_service`` can reap. Started with
SIGINT and SIGTERM at their default actions: an ignored signal is inherited across exec, and the
caller may well ignore them (a background job or ``nohup`` ignores SIGINT, and Dagster maps SIGTERM
to SIGINT's disposition in a run's process), which would leave the server deaf to its graceful stop
and every stop waiting for the SIGKILL. ``wait_until_ready`` polls the server's own readiness probe
and fails early, with the log's tail, when the process exits first. Domain code: no dagster import.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO


def start_service(
    cmd: list[str], *, log: IO[bytes], env: Mapping[str, str], cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """``cmd`` in a new session with SIGINT and SIGTERM at their defaults, its stdout and stderr
    to ``log``."""
    return subprocess.Popen(
        [*default_signals_prefix(), *cmd],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        cwd=cwd,
    )


@functools.cache
def default_signals_prefix() -> tuple[str, ...]:
    """``env --default-signal=INT,TERM`` (GNU coreutils >= 8.31; it then execs the command, so the
    server keeps the pid) where this system's ``env`` has it, else nothing. Not a ``preexec_fn``:
    that is unsafe in a process with threads, which a Dagster run has."""
    env = shutil.which("env")
    if env is None:
        return ()
    prefix = (env, "--default-signal=INT,TERM")
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else ()


def wait_until_ready(
    proc: subprocess.Popen[bytes],
    ready: Callable[[], bool],
    *,
    since: float,
    timeout_s: float,
    not_ready: Callable[[int | None], Exception],
    poll_s: float = 0.05,
) -> None:
    """Return once ``ready()`` is true; raise ``not_ready(exit code)`` if the process exits first,
    or ``not_ready(None)`` when ``timeout_s`` has passed since ``since`` (a ``perf_counter``)."""
    while True:
        code = proc.poll()
        if code is not None:
            raise not_ready(code)
        if ready():
            return
        if time.perf_counter() - since > timeout_s:
            raise not_ready(None)
        time.sleep(poll_s)


def stop_service(
    proc: subprocess.Popen[bytes], *, stop_signal: int, timeout_s: float, reap_group: bool
) -> int | None:
    """``stop_signal``, then SIGKILL of its process group after ``timeout_s``; with ``reap_group``
    the group is killed even after a clean exit (children a crashed server left behind would hold
    memory and ports). Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(stop_signal)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid)
            proc.wait(timeout=10)
    if reap_group:
        kill_group(proc.pid)
    return proc.returncode


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
