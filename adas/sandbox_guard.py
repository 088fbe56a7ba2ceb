"""The audit hook a sandboxed worker installs before it touches untrusted model code.

Python audit hooks cannot be removed once added, so model code running in the same interpreter
cannot switch this off. Each forbidden action raises :class:`SandboxViolation` naming what was
tried, and is recorded so the worker can report it even when model code swallows the error.
The bubblewrap mounts (:mod:`adas.sandbox`) contain what the hook cannot see (native code).
"""

import os
import sys
from pathlib import Path

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_FORBIDDEN_EVENTS = {
    "socket.__new__": "open a socket",
    "socket.connect": "connect a socket",
    "socket.bind": "bind a socket",
    "socket.getaddrinfo": "resolve a host name",
    "subprocess.Popen": "start a process",
    "os.system": "run a shell command",
    "os.exec": "replace the process",
    "os.posix_spawn": "start a process",
    "os.spawn": "start a process",
    "os.fork": "fork",
    "os.forkpty": "fork",
    "pty.spawn": "start a process",
    "ctypes.dlopen": "load a native library",
    "webbrowser.open": "open a browser",
}

violations: list[str] = []


class SandboxViolation(PermissionError):
    """Model code tried something the sandbox forbids."""


def _is_write(mode: object, flags: object) -> bool:
    if isinstance(mode, str) and any(c in mode for c in "wax+"):
        return True
    return isinstance(flags, int) and bool(flags & _WRITE_FLAGS)


def install(scratch: str) -> None:
    """Forbid writes outside ``scratch``, sockets, processes and native library loads."""
    root = os.path.realpath(scratch)

    def hook(event: str, args: tuple) -> None:
        what = None
        if (
            event == "open"
            and args
            and _is_write(args[1] if len(args) > 1 else None, args[2] if len(args) > 2 else None)
        ):
            target = args[0]
            if isinstance(target, (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(target))
                if path != root and not path.startswith(root + os.sep):
                    what = f"write {path}"
        elif event in (
            "os.remove",
            "os.rename",
            "os.rmdir",
            "os.mkdir",
            "os.chmod",
            "os.truncate",
            "shutil.rmtree",
        ):
            target = args[0] if args else None
            if isinstance(target, (str, bytes, os.PathLike)):
                path = os.path.realpath(os.fsdecode(target))
                if not path.startswith(root + os.sep):
                    what = f"{event.split('.')[-1]} {path}"
        else:
            for prefix, action in _FORBIDDEN_EVENTS.items():
                if event == prefix or event.startswith(prefix + "."):
                    detail = ""
                    if event in ("socket.connect", "socket.bind") and len(args) > 1:
                        detail = f" to {args[1]!r}"
                    elif event in ("subprocess.Popen", "os.system") and args:
                        detail = f": {str(args[1] if event == 'subprocess.Popen' and len(args) > 1 else args[0])[:120]}"
                    elif event == "ctypes.dlopen" and args:
                        if _is_system_library(args[0]):
                            return
                        detail = f" {args[0]}"
                    what = f"{action}{detail}"
                    break
        if what is not None:
            violations.append(what)
            raise SandboxViolation(f"the model tried to {what}: not allowed in the intake sandbox")

    sys.addaudithook(hook)


def _is_system_library(name: object) -> bool:
    """torch, numpy and onnxruntime dlopen their own shared objects from the installed packages."""
    if name is None:
        return True
    path = os.fsdecode(name) if isinstance(name, (str, bytes, os.PathLike)) else str(name)
    return path.startswith(tuple(_library_roots())) or "/" not in path


def _library_roots() -> list[str]:
    roots = {os.path.realpath(p) for p in sys.path if p and os.path.isdir(p)}
    roots |= {os.path.realpath(sys.prefix), os.path.realpath(sys.base_prefix), "/usr/lib", "/lib"}
    return sorted(roots)


def scratch_dir() -> Path:
    return Path(os.environ["ADAS_SANDBOX_SCRATCH"])


def bundle_dir() -> Path:
    return Path(os.environ["ADAS_SANDBOX_BUNDLE"])
