"""Run the real Triton Inference Server binary (from PyPI ``nvidia-pytriton``) on a repository.

PyPI's ``nvidia-pytriton`` 0.7.0 bundles ``tritonserver`` 2.51.0 with only the python backend.
It needs numpy<2, so it lives in its own virtualenv (``scripts/setup_triton_env.sh`` makes
``<repo>/.venv-triton``, overridable with ``TRITON_VENV``). The binary is run directly, not
through pytriton's Python API, so that it serves *our* repository exactly as a production
server would:

* a backend directory of symlinks to the python backend and the 3.11 stub,
* the interpreter's LIBDIR first on ``LD_LIBRARY_PATH`` (the stub needs a libpython whose
  patch version matches the venv's interpreter, not the system one),
* the venv's ``bin`` first on ``PATH``: the stub then runs model.py in that venv, so the
  repository's ``config.pbtxt`` stays free of ``EXECUTION_ENV_PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from adas.service_process import start_service, stop_service, wait_until_ready

REPO_ROOT = Path(__file__).resolve().parents[2]
_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
# Health probes go straight to the loopback server, whatever proxy the environment names.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class TritonServerError(RuntimeError):
    """The server could not be started; the message carries the log's tail."""


class TritonNotInstalledError(TritonServerError):
    """No runnable ``tritonserver`` in the virtualenv (an environment problem, not a model one)."""


def default_triton_venv() -> Path:
    """``$TRITON_VENV``, else ``<repo>/.venv-triton`` (what ``scripts/setup_triton_env.sh`` makes)."""
    env = os.environ.get("TRITON_VENV")
    return Path(env) if env else REPO_ROOT / ".venv-triton"


def _venv_python_version(venv: Path) -> str | None:
    """``3.11`` from the venv's ``pyvenv.cfg`` (no interpreter start needed)."""
    cfg = venv / "pyvenv.cfg"
    if not cfg.is_file():
        return None
    for line in cfg.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() in ("version", "version_info"):
            return ".".join(value.strip().split(".")[:2])
    return None


def tritonserver_root(venv: Path) -> Path | None:
    """``.../site-packages/pytriton/tritonserver`` inside ``venv``, or None."""
    for root in sorted(venv.glob("lib/python3*/site-packages/pytriton/tritonserver")):
        if (root / "bin" / "tritonserver").is_file():
            return root
    return None


def triton_available(venv: str | Path | None = None) -> bool:
    """Whether ``venv`` (default: ``default_triton_venv()``) can run the server here."""
    venv = Path(venv) if venv is not None else default_triton_venv()
    root = tritonserver_root(venv)
    version = _venv_python_version(venv)
    if root is None or version is None or not (venv / "bin" / "python").exists():
        return False
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    return stub.is_file() and all((root / "backends" / "python" / f).is_file() for f in _BACKEND_FILES)


def free_port(host: str = "127.0.0.1", exclude: set[int] | None = None) -> int:
    """A port that is free now (the OS picks it). Racy by nature; fine for tests on one machine."""
    exclude = exclude or set()
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in exclude:
            return port
    raise RuntimeError("could not find a free port")


def _interpreter_libdir(venv: Path) -> str:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip()


class TritonServer:
    """Context manager around a ``tritonserver`` process serving ``repository``.

    ``http_url`` / ``grpc_url`` are ``host:port`` as ``tritonclient`` wants them. Close every
    tritonclient client before the server stops: an open HTTP keep-alive connection makes the
    server wait its whole exit timeout.
    """

    def __init__(
        self,
        repository: str | Path,
        *,
        venv: str | Path | None = None,
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        log_path: str | Path | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 60.0,
        stop_timeout_s: float = 20.0,
        exit_timeout_s: int = 5,
    ) -> None:
        self.repository = Path(repository).resolve()
        self.venv = Path(venv) if venv is not None else default_triton_venv()
        self.host = host
        taken: set[int] = {p for p in (http_port, grpc_port, metrics_port) if p}
        ports = []
        for p in (http_port, grpc_port, metrics_port):
            if p is None:
                p = free_port(host, taken)
                taken.add(p)
            ports.append(int(p))
        self.http_port, self.grpc_port, self.metrics_port = ports
        self.log_path = Path(log_path) if log_path is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None

    # ------------------------------------------------------------------ endpoints
    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # ------------------------------------------------------------------ lifecycle
    def _prepare(self) -> tuple[list[str], dict[str, str]]:
        if not triton_available(self.venv):
            raise TritonNotInstalledError(
                f"no runnable tritonserver in {self.venv}: run `bash scripts/setup_triton_env.sh` "
                "(or `make setup`), or point TRITON_VENV at such a virtualenv"
            )
        if not self.repository.is_dir():
            raise TritonServerError(f"model repository {self.repository} does not exist")
        root = tritonserver_root(self.venv)
        version = _venv_python_version(self.venv)
        assert root is not None and version is not None
        self._workdir = Path(tempfile.mkdtemp(prefix="tritonserver-"))
        # The python backend looks for its .so, utils and stub together in <backends>/python.
        backend = self._workdir / "backends" / "python"
        backend.mkdir(parents=True)
        for f in _BACKEND_FILES:
            (backend / f).symlink_to(root / "backends" / "python" / f)
        stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
        (backend / "triton_python_backend_stub").symlink_to(stub)

        env = dict(os.environ)
        # Keep the caller's interpreter out of the stub's environment (its numpy is 2.x).
        for var in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(var, None)
        libdir = _interpreter_libdir(self.venv)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
        env["PATH"] = os.pathsep.join(p for p in (str(self.venv / "bin"), env.get("PATH", "")) if p)
        # Numeric libraries in the stubs must not spin on the two cores between requests.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [
            str(root / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={self._workdir / 'backends'}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # Serve config.pbtxt exactly as written: nothing filled in from the model files.
            "--disable-auto-complete-config",
            "--strict-readiness=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
        ]
        return cmd, env

    def start(self) -> TritonServer:
        if self.running():
            return self
        try:
            cmd, env = self._prepare()
        except BaseException:
            self.stop()  # removes a half-made backend dir
            raise
        if self.log_path is None:
            # Outside the workdir, so that the log outlives stop() for post-mortems.
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        log_path = self.log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            # Own session: the stubs it forks share its process group, which stop() can reap.
            self._proc = start_service(cmd, log=log, env=env, cwd=self._workdir)
        try:
            wait_until_ready(
                self._proc,
                self._ready,
                since=t0,
                timeout_s=self.startup_timeout_s,
                not_ready=self._not_ready,
            )
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - t0
        return self

    def _ready(self) -> bool:
        url = f"http://{self.host}:{self.http_port}/v2/health/ready"
        try:
            with _DIRECT.open(url, timeout=1.0) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            return False

    def _not_ready(self, exit_code: int | None) -> TritonServerError:
        what = (
            f"exited with code {exit_code} before becoming ready"
            if exit_code is not None
            else f"was not ready after {self.startup_timeout_s:.0f} s"
        )
        return TritonServerError(
            f"tritonserver {what} (repository {self.repository}). Log tail:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGINT (graceful: unloads models, stops stubs), SIGKILL of the group after a timeout;
        the group is reaped either way (stubs left behind by a crashed or killed server would hold
        memory and ports). Returns the exit code (None if it was never started)."""
        proc, self._proc = self._proc, None
        code = (
            stop_service(proc, stop_signal=signal.SIGINT, timeout_s=self.stop_timeout_s, reap_group=True)
            if proc is not None
            else None
        )
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
