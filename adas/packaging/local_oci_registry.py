"""Debian's ``docker-registry`` (CNCF Distribution 2.8) as the local OCI registry.

The packaged systemd service is not used: like nginx and Triton, the registry runs in the
foreground under our control, on 127.0.0.1 with a port of our choosing, its configuration and
blob storage under one directory (``AdasHome.oci_registry`` by default), no authentication (a
loopback-only server for one user). Production points the same client code at ECR or any OCI
registry instead (:mod:`adas.packaging.oci_client`).

Layout under the directory: ``config.yml`` (regenerated at every start), ``storage/`` (the
filesystem driver's root: ``docker/registry/v2/{blobs,repositories}``) and ``registry.log``.

As a daemon (:func:`ensure_local_registry`): started on demand on a fixed port when nothing
answers there, left running for later runs, its pid in ``registry.pid``; stopped by
:func:`stop_local_registry` (``python -m adas.packaging.local_oci_registry stop``). Blob garbage
collection (``... gc``, :func:`garbage_collect`) stops it for the sweep and starts it again.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import yaml

from adas.packaging.triton_server import free_port
from adas.service_process import start_service, stop_service, wait_until_ready
from adas.settings import AdasHome

BINARY = "docker-registry"
# Distribution reads REGISTRY_<SECTION>_<KEY> variables as overrides of the config file: one
# left in the environment (REGISTRY_HTTP_ADDR, REGISTRY_AUTH, ...) would silently change the
# server we start, so the child gets none of them.
_OVERRIDE_PREFIX = "REGISTRY_"
PID_FILE = "registry.pid"
LOCK_FILE = "registry.lock"
# Set by the caller's environment switch; named in errors so a person knows what to change.
PORT_HINT = "ADAS_OCI_REGISTRY_PORT"
# Daemons this process started, kept referenced: no "still running" warning when a Popen is
# collected, and stop_local_registry can reap its own child instead of leaving a zombie.
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


class LocalRegistryError(RuntimeError):
    pass


def registry_binary() -> str:
    path = shutil.which(BINARY) or (f"/usr/bin/{BINARY}" if Path(f"/usr/bin/{BINARY}").exists() else None)
    if path is None:
        raise LocalRegistryError(
            f"{BINARY} is not installed: run `bash scripts/setup_system_deps.sh` "
            "(Debian: apt-get install -y docker-registry)"
        )
    return path


def registry_available() -> bool:
    try:
        registry_binary()
        return True
    except LocalRegistryError:
        return False


def registry_config(storage: Path, host: str, port: int, secret: str) -> dict[str, object]:
    """The server's configuration (Distribution's ``config.yml``, version 0.1)."""
    return {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}, "fields": {"service": "registry"}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            # Manifest deletion by digest, for retention (the pruner deletes unreferenced digests).
            "delete": {"enabled": True},
            # No `cache.blobdescriptor` (Debian's default config has one, in memory): without it
            # every HEAD/GET reads the storage itself, so what the registry answers is what is on disk.
            # Uploads left open by an interrupted push are purged after a week.
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": "168h", "interval": "24h", "dryrun": False}
            },
        },
        "http": {
            "addr": f"{host}:{port}",
            # Signs upload session state; a fresh one per start is fine (an upload interrupted by
            # a restart is simply begun again by the client).
            "secret": secret,
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "health": {"storagedriver": {"enabled": False}},
    }


class LocalOciRegistry:
    """``docker-registry serve`` on ``host:port`` with its storage under ``root``.

    Usable as a context manager; :meth:`start` returns once ``GET /v2/`` answers with the
    Distribution API version header (so another process holding the port is not mistaken for it).
    """

    def __init__(
        self,
        root: str | Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.root = Path(root)
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """``host:port``, as image references name the registry."""
        return f"{self.host}:{self.port}"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (``sha256:<hex>``)."""
        algorithm, hex_ = digest.split(":", 1)
        return self.storage / "docker/registry/v2/blobs" / algorithm / hex_[:2] / hex_ / "data"

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def start(self) -> LocalOciRegistry:
        if self.running():
            return self
        binary = registry_binary()
        self.storage.mkdir(parents=True, exist_ok=True)
        config = registry_config(self.storage, self.host, self.port, secrets.token_hex(16))
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=True))
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDE_PREFIX)}
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            self._proc = start_service([binary, "serve", str(self.config_path)], log=log, env=env)
        try:
            wait_until_ready(
                self._proc,
                self._answers,
                since=t0,
                timeout_s=self.startup_timeout_s,
                not_ready=self._not_ready,
            )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
        try:
            conn.request("GET", "/v2/")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200 and resp.getheader("Docker-Distribution-API-Version") == "registry/2.0"
        except OSError:
            return False
        finally:
            conn.close()

    def _not_ready(self, exit_code: int | None) -> LocalRegistryError:
        if exit_code is not None:
            return LocalRegistryError(
                f"{BINARY} exited with code {exit_code} before answering on {self.url}/v2/ "
                f"(config {self.config_path}). Log tail:\n{self.log_tail()}"
            )
        return LocalRegistryError(
            f"{BINARY} did not answer on {self.url}/v2/ within {self.startup_timeout_s:.0f} s. "
            f"Log tail:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after ``stop_timeout_s``; the exit code (None if never started)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        return stop_service(proc, stop_signal=signal.SIGTERM, timeout_s=self.stop_timeout_s, reap_group=False)

    def __enter__(self) -> LocalOciRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------------- daemon


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """One starter at a time per registry directory (two cells' runs may ask at once)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _served_config(pid: int) -> Path | None:
    """The config file a live (not zombie) ``docker-registry serve <config>`` process ``pid`` serves."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    if state == "Z" or len(args) < 3 or Path(args[0].decode()).name != BINARY or args[1] != b"serve":
        return None
    return Path(args[2].decode())


def _runs_config(pid: int, config_path: Path) -> bool:
    """Whether ``pid`` is a live (not zombie) ``docker-registry serve <config_path>``."""
    return _served_config(pid) == config_path


def _registry_processes() -> Iterator[tuple[int, Path]]:
    """(pid, config file) of every live registry process on this host."""
    for proc in Path("/proc").iterdir():
        config = _served_config(int(proc.name)) if proc.name.isdigit() else None
        if config is not None:
            yield int(proc.name), config


def _find_serving(config_path: Path) -> int | None:
    """A live registry process serving ``config_path`` (its pid file may be gone, e.g. after
    ``make clean-state`` removed ADAS_HOME under it)."""
    return next((pid for pid, config in _registry_processes() if config == config_path), None)


def _other_local_registry(port: int) -> Path | None:
    """The directory of another ADAS_HOME's registry whose pid file says it serves ``port``."""
    for pid, config in _registry_processes():
        record = _read_pid_file(config.parent) or {}
        if record.get("port") == port and record.get("pid") == pid:
            return config.parent
    return None


def _read_pid_file(root: Path) -> dict[str, object] | None:
    try:
        record = json.loads((root / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_pid_file(root: Path, pid: int, host: str, port: int) -> None:
    tmp = root / f".{PID_FILE}.tmp"
    tmp.write_text(json.dumps({"pid": pid, "host": host, "port": port}) + "\n")
    os.replace(tmp, root / PID_FILE)


def local_registry_pid(root: str | Path) -> int | None:
    """The pid of the daemon serving ``root`` per its pid file, if that process still serves it."""
    root = Path(root)
    record = _read_pid_file(root)
    pid = record.get("pid") if record else None
    if isinstance(pid, int) and _runs_config(pid, root / "config.yml"):
        return pid
    return None


def ensure_local_registry(root: str | Path, port: int, host: str = "127.0.0.1") -> LocalOciRegistry:
    """The registry of ``root`` answering on ``host:port``: the one already running (its pid file
    says so), or one started now and left running. Another server on that port is refused,
    naming the port and how to pick another: pushing into someone else's storage would record
    digests this ADAS_HOME cannot serve."""
    root = Path(root)
    reg = LocalOciRegistry(root, port, host)
    with _locked(root):
        record = _read_pid_file(root) or {}
        pid = local_registry_pid(root)
        if pid is not None and (record.get("host"), record.get("port")) != (host, port):
            raise LocalRegistryError(
                f"the OCI registry of {root} already runs on {record.get('host')}:{record.get('port')} "
                f"(pid {pid}), not on {reg.address}: set {PORT_HINT}={record.get('port')}, or stop it "
                f"(python -m adas.packaging.local_oci_registry stop {root})"
            )
        if reg._answers():
            pid = pid or _find_serving(reg.config_path)
            if pid is None:
                other = _other_local_registry(port)
                stop_other = (
                    f" (the one of {other}, e.g. another ADAS_HOME's demo: stop it with "
                    f"python -m adas.packaging.local_oci_registry stop {other})"
                    if other
                    else ""
                )
                raise LocalRegistryError(
                    f"{reg.url} is answered by an OCI registry that is not the one of {root}{stop_other}: "
                    f"set {PORT_HINT} to a free port"
                )
            _write_pid_file(root, pid, host, port)  # (re)adopt ours, e.g. after its pid file was removed
            return reg
        if pid is not None:
            raise LocalRegistryError(
                f"the OCI registry of {root} (pid {pid}) does not answer on {reg.url}/v2/. "
                f"Log tail:\n{reg.log_tail()}"
            )
        reg.start()
        proc, reg._proc = reg._proc, None  # the daemon outlives this object and this run
        assert proc is not None
        _STARTED[proc.pid] = proc
        _write_pid_file(root, proc.pid, host, port)
        return reg


def stop_local_registry(root: str | Path, timeout_s: float = 10.0) -> int | None:
    """Stop the daemon of ``root`` (SIGTERM, SIGKILL after ``timeout_s``); its pid, or None when
    none was running. The pid file goes with it."""
    root = Path(root)
    if not root.is_dir():
        return None
    with _locked(root):
        pid = local_registry_pid(root)
        if pid is not None:
            _terminate(pid, root / "config.yml", timeout_s)
        with contextlib.suppress(FileNotFoundError):
            (root / PID_FILE).unlink()
    return pid


def _terminate(pid: int, config_path: Path, timeout_s: float) -> None:
    child = _STARTED.pop(pid, None)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if child is not None:  # our own child: wait() reaps it
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=timeout_s)
                return
            continue
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not _runs_config(pid, config_path):
                return
            time.sleep(0.05)


def garbage_collect(root: str | Path, *, dry_run: bool = False) -> tuple[list[str], str]:
    """``docker-registry garbage-collect`` on the storage of ``root``: frees the blobs no
    remaining manifest references (after :func:`adas.registry.retention.prune_oci_manifests`
    deleted manifests). Distribution requires the registry stopped (a push racing the sweep would
    lose blobs), so a running daemon is stopped first and started again on its host and port.
    No ``--delete-untagged``: a pinned digest whose tag was moved is untagged and must stay.
    Returns the blob digests deleted (eligible, with ``dry_run``) and the tool's output."""
    root = Path(root)
    reg = LocalOciRegistry(root)
    if not reg.config_path.is_file():
        raise LocalRegistryError(
            f"no OCI registry under {root} (no {reg.config_path.name}): nothing to collect"
        )
    with _locked(root):
        pid = local_registry_pid(root)
        record = _read_pid_file(root) or {}
        if pid is not None:
            _terminate(pid, reg.config_path, 10.0)
        env = {k: v for k, v in os.environ.items() if not k.startswith(_OVERRIDE_PREFIX)}
        cmd = [
            registry_binary(),
            "garbage-collect",
            *(["--dry-run"] if dry_run else []),
            str(reg.config_path),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if pid is not None:  # serving again before anything is reported, even on failure
        ensure_local_registry(root, int(str(record.get("port"))), str(record.get("host") or "127.0.0.1"))
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise LocalRegistryError(
            f"{BINARY} garbage-collect {reg.config_path} exited {proc.returncode}:\n{output[-2000:]}"
        )
    # Distribution prints "blob eligible for deletion: sha256:..." for each unreferenced blob.
    blobs = re.findall(r"blob eligible for deletion: (sha256:[0-9a-f]{64})", output)
    return sorted(set(blobs)), output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The local OCI registry daemon of an ADAS_HOME.")
    parser.add_argument(
        "action",
        choices=["status", "stop", "gc"],
        help="gc: free unreferenced blobs (after adas-registry prune)",
    )
    parser.add_argument("root", nargs="?", help="registry directory (default: $ADAS_HOME/oci-registry)")
    parser.add_argument("--dry-run", action="store_true", help="gc: list the blobs it would delete")
    args = parser.parse_args(argv)
    root = Path(args.root) if args.root else AdasHome.from_env().oci_registry
    if args.action == "gc":
        try:
            blobs, _ = garbage_collect(root, dry_run=args.dry_run)
        except LocalRegistryError as exc:
            print(f"gc: {exc}")
            return 1
        print(f"{'would delete' if args.dry_run else 'deleted'} {len(blobs)} unreferenced blobs of {root}")
        for digest in blobs:
            print(f"  {digest}")
        return 0
    if args.action == "stop":
        pid = stop_local_registry(root)
        print(
            f"stopped the OCI registry of {root} (pid {pid})"
            if pid
            else f"no OCI registry running for {root}"
        )
        return 0
    pid = local_registry_pid(root)
    record = _read_pid_file(root) or {}
    print(
        f"OCI registry of {root}: pid {pid} on {record.get('host')}:{record.get('port')}"
        if pid
        else f"no OCI registry running for {root}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
