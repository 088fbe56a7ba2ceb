"""Debian's ``docker-registry`` (CNCF Distribution 2.8) as the local OCI registry.

The packaged systemd service is not used: like nginx and Triton, the registry runs in the
foreground under our control, on 127.0.0.1 with a port of our choosing, its configuration and
blob storage under one directory (``AdasHome.oci_registry`` by default), no authentication (a
loopback-only server for one user). Production points the same client code at ECR or any OCI
registry instead (:mod:`adas.packaging.oci_client`).

Layout under the directory: ``config.yml`` (regenerated at every start), ``storage/`` (the
filesystem driver's root: ``docker/registry/v2/{blobs,repositories}``) and ``registry.log``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import yaml

from adas.packaging.triton_server import free_port

BINARY = "docker-registry"
# Distribution reads REGISTRY_<SECTION>_<KEY> variables as overrides of the config file: one
# left in the environment (REGISTRY_HTTP_ADDR, REGISTRY_AUTH, ...) would silently change the
# server we start, so the child gets none of them.
_OVERRIDE_PREFIX = "REGISTRY_"


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
            self._proc = subprocess.Popen(
                [binary, "serve", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C meant for the caller does not kill it mid-request
            )
        try:
            self._wait_ready(t0)
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

    def _wait_ready(self, t0: float) -> None:
        assert self._proc is not None
        while True:
            code = self._proc.poll()
            if code is not None:
                raise LocalRegistryError(
                    f"{BINARY} exited with code {code} before answering on {self.url}/v2/ "
                    f"(config {self.config_path}). Log tail:\n{self.log_tail()}"
                )
            if self._answers():
                return
            if time.perf_counter() - t0 > self.startup_timeout_s:
                raise LocalRegistryError(
                    f"{BINARY} did not answer on {self.url}/v2/ within {self.startup_timeout_s:.0f} s. "
                    f"Log tail:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM, SIGKILL after ``stop_timeout_s``; the exit code (None if never started)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=10)
        return proc.returncode

    def __enter__(self) -> LocalOciRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
