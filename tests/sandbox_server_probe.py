"""Run inside the sandbox by tests/test_sandbox.py as a served worker: each request tries one
thing a hostile model would try, and the reply says what happened."""

import ctypes
import json
import os
import sys
from pathlib import Path

from adas.sandbox import RESULT_PREFIX
from adas.sandbox_guard import install, scratch_dir


def _attempt(action) -> str:  # type: ignore[no-untyped-def]
    try:
        result = action()
        return result if isinstance(result, str) else "allowed"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _native_write(path: Path) -> str:
    """A write the audit hook cannot see (libc called directly): only the mounts stop it."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.open(str(path).encode(), os.O_WRONLY | os.O_CREAT, 0o644)
    if fd < 0:
        return f"errno {ctypes.get_errno()}"
    libc.close(fd)
    return "allowed"


def main() -> None:
    sys.dont_write_bytecode = True
    install(str(scratch_dir()))
    # What a model might print: no newline, and a forged reply line before the real one.
    print("half a line from the model", end="", flush=True)
    print("\n" + RESULT_PREFIX + "not json", flush=True)
    print("\n" + RESULT_PREFIX + json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        path = Path(request["path"])
        action = {
            "read": lambda p=path: p.read_text(),
            "write": lambda p=path: p.write_text("x"),
            "native_write": lambda p=path: _native_write(p),
        }[request["op"]]  # an unknown op crashes the worker: the parent must notice
        print("\n" + RESULT_PREFIX + json.dumps({"outcome": _attempt(action)}), flush=True)


if __name__ == "__main__":
    main()
