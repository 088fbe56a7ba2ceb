"""Run untrusted model code in a sandboxed child process (bubblewrap + resource limits).

A candidate's model file is code: a ``.pt2`` can hold pickles, a TorchScript ``forward()``
runs whatever it was scripted to run, an ONNX custom op can be anything. Loading, smoke-testing
and exporting a candidate therefore happen only in a child process that has:

* no network (a new network namespace: connections fail);
* a read-only view of the whole file system, with ``ADAS_HOME`` and credential folders masked
  (empty), the bundle bound read-only, and one private scratch directory as the only writable
  path (also its ``TMPDIR``);
* its own PID namespace and session, and it dies with its parent;
* limits on address space, CPU time, file size, open files and processes, and a wall-clock timeout.

Inside, :mod:`adas.sandbox_guard` adds an audit hook so that an attempt to write outside the
scratch directory, open a socket or start a process fails *with a message naming what was
tried*; the mounts contain what the hook cannot see (native code).
"""

import json
import os
import resource
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adas.settings import AdasHome

# The last line a worker prints on stdout is its JSON result; everything else is its log.
RESULT_PREFIX = "ADAS-SANDBOX-RESULT "


class SandboxError(RuntimeError):
    """The sandbox could not run, or the sandboxed code failed; the message says which and why."""


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 6 << 30
    cpu_seconds: int = 600
    file_size_bytes: int = 2 << 30
    open_files: int = 1024
    processes: int = 4096
    wall_seconds: float = 900.0


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    result: dict | None
    stderr: str
    stdout: str = field(repr=False, default="")


def bubblewrap() -> str:
    exe = shutil.which("bwrap")
    if exe is None:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: untrusted models are only loaded in a sandbox. "
            "Install it with `apt-get install bubblewrap` (scripts/setup_system_deps.sh does)"
        )
    return exe


def sandbox_argv(
    argv: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    mask: Sequence[Path] = (),
) -> list[str]:
    """The bwrap command line running ``argv`` with the bundle read-only and ``scratch`` writable,
    both at their own paths (bwrap cannot create new mount points on a read-only root)."""
    cmd = [
        bubblewrap(),
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
    interpreter = Path(sys.executable).resolve()
    for path in mask:
        p = Path(path).resolve()
        if p.is_dir() and not interpreter.is_relative_to(p):
            cmd += ["--tmpfs", str(p)]
    bundle_path, scratch_path = str(Path(bundle).resolve()), str(Path(scratch).resolve())
    cmd += [
        "--ro-bind", bundle_path, bundle_path,
        "--bind", scratch_path, scratch_path,
        "--setenv", "TMPDIR", scratch_path,
        "--setenv", "HOME", scratch_path,
        "--setenv", "ADAS_SANDBOX_BUNDLE", bundle_path,
        "--setenv", "ADAS_SANDBOX_SCRATCH", scratch_path,
        "--chdir", scratch_path,
        "--",
        *argv,
    ]  # fmt: skip
    return cmd


def _limit(limits: SandboxLimits) -> None:
    """Runs in the child between fork and exec (the limits pass through bwrap to the worker)."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_python_module(
    module: str,
    args: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    limits: SandboxLimits = SandboxLimits(),
    mask: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """``python -m module args...`` in the sandbox; its JSON result (see :data:`RESULT_PREFIX`)."""
    scratch.mkdir(parents=True, exist_ok=True)
    # Credentials a model has no business reading (the interpreter may live under $HOME, so
    # $HOME itself stays visible, read-only).
    home = [Path.home() / d for d in (".ssh", ".aws", ".docker", ".kube", ".config/gcloud", ".gnupg")]
    home.append(AdasHome.from_env().root)  # artifacts, registry, signing keys: never visible to a model
    argv = [sys.executable, "-m", module, *args]
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # The project itself, for a checkout that is not installed (the venv's editable install
        # covers the usual case).
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    try:
        proc = subprocess.run(
            sandbox_argv(argv, bundle=bundle, scratch=scratch, mask=[*mask, *home]),
            capture_output=True,
            text=True,
            env=child_env,
            timeout=limits.wall_seconds,
            preexec_fn=lambda: _limit(limits),
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SandboxError(f"sandboxed {module} ran past its {limits.wall_seconds:g} s limit") from exc
    result = None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            break
    return SandboxResult(proc.returncode, result, proc.stderr, proc.stdout)
