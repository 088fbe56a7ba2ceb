"""Run inside the sandbox by tests/test_sandbox.py: try what a hostile model would try, report."""

import json
import socket
import sys
from pathlib import Path

from adas.sandbox import RESULT_PREFIX
from adas.sandbox_guard import install, scratch_dir


def _attempt(action) -> str:  # type: ignore[no-untyped-def]
    try:
        action()
        return "allowed"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def main() -> None:
    secret, outside = sys.argv[1], sys.argv[2]
    sys.dont_write_bytecode = True
    install(str(scratch_dir()))
    result = {
        "read_secret": _attempt(lambda: Path(secret).read_text()),
        "write_outside": _attempt(lambda: Path(outside).write_text("x")),
        "write_scratch": _attempt(lambda: (scratch_dir() / "ok").write_text("x")),
        "socket": _attempt(lambda: socket.create_connection(("127.0.0.1", 5432), timeout=1)),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
