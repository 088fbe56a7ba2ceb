"""`dagster dev` (webserver + daemon) as a child process, and Debian's Chromium to look at it.

Used by the UI and backfill tests and by the UI and end-to-end benchmarks, so all of them run
the code location exactly as a user does (`make ui`): `workspace.yaml`, the instance under
``$DAGSTER_HOME`` (see ``resources.instance.prepare_local_instance``), sensors and schedules
as configured there.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adas.service_process import start_service, stop_service

REPO = Path(__file__).resolve().parents[1]
# Headless Chromium in a container: no sandbox (no user namespaces), no GPU, no /dev/shm
# (small in containers), nothing that phones home.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"dagster dev did not answer on {url} within {timeout:.0f} s")


@contextmanager
def dagster_dev(
    env: Mapping[str, str] | None = None, log_path: Path | None = None, ready_timeout: float = 120
) -> Iterator[str]:
    """Run `dagster dev` on a free port until the block ends; yields its URL.

    ``env`` defaults to this process's environment (``DAGSTER_HOME`` and ``ADAS_HOME`` must be
    set). Started in its own session so that stopping it also stops the daemon and code server.
    """
    url_port = free_port()
    url = f"http://127.0.0.1:{url_port}"
    log = open(log_path, "wb") if log_path else open(os.devnull, "wb")  # noqa: SIM115 - closed below
    proc = start_service(
        [
            sys.executable,
            "-m",
            "dagster",
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(url_port),
        ],
        log=log,
        env=os.environ if env is None else env,
        cwd=REPO,
    )
    try:
        _wait_ready(url, proc, ready_timeout)
        yield url
    finally:
        # SIGINT: dagster dev stops its daemon and code server itself; SIGKILL of the group after 60 s.
        stop_service(proc, stop_signal=signal.SIGINT, timeout_s=60, reap_group=False)
        log.close()


def launch_chromium(playwright: Any) -> Any:
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        raise RuntimeError("Debian's chromium is required (scripts/setup_system_deps.sh installs it)")
    return playwright.chromium.launch(executable_path=chromium, headless=True, args=list(CHROMIUM_ARGS))
