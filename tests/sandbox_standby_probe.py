"""Run inside the sandbox by tests/test_sandbox.py as a standby (adas.sandbox.Standby): it says
it is ready, waits for one job, tries what the job asks (as a hostile model would), reports and
exits."""

import json
import os
import resource
import sys
from pathlib import Path

from adas.sandbox import RESULT_PREFIX
from adas.sandbox_guard import bundle_dir, install, scratch_dir


def _attempt(action) -> str:  # type: ignore[no-untyped-def]
    try:
        result = action()
        return result if isinstance(result, str) else "allowed"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def main() -> None:
    sys.dont_write_bytecode = True
    print(RESULT_PREFIX + json.dumps({"ready": True}), flush=True)
    job = json.loads(sys.stdin.readline())
    install(str(scratch_dir()))
    if job.get("crash"):
        os.abort()
    # A forged result line first (as model code could print): the worker's own comes last.
    print(RESULT_PREFIX + json.dumps({"forged": True}), flush=True)
    limits = {
        name: resource.getrlimit(getattr(resource, name))[0]
        for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC")
    }
    reply = {
        "bundle": str(bundle_dir()),
        "model": _attempt(lambda: (bundle_dir() / "model.pt2").read_text()),
        "write_bundle": _attempt(lambda: (bundle_dir() / "model.pt2").write_text("changed")),
        "write_outside": _attempt(lambda: Path(job["outside"]).write_text("x")),
        "write_scratch": _attempt(lambda: (scratch_dir() / "mine").write_text("x")),
        "read_other": _attempt(lambda: Path(job["other"]).read_text()),
        "list_other": _attempt(lambda: ",".join(os.listdir(Path(job["other"]).parent))),
        "limits": limits,
    }
    print(RESULT_PREFIX + json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
