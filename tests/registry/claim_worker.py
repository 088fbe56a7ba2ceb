"""One claimer of the registry's concurrent-claim test, in its own interpreter.

``python -m tests.registry.claim_worker <url> <sync dir> <claimer> <bundle sha256>`` opens the
registry, writes ``<sync dir>/ready-<claimer>``, waits for ``<sync dir>/go`` (so that every
claimer inserts at the same moment), claims ``vehicle-detection-2d 2.0.0`` and prints one JSON
line: ``{"won": true, "claim": {...}}`` or ``{"won": false, "error": "...", "holder": {...}}``.
"""

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from adas.registry.store import RegistryStore, VersionClaimConflict

TASK, VERSION = "vehicle-detection-2d", "2.0.0"


def main(url: str, sync: Path, claimer: str, bundle_sha256: str) -> dict[str, object]:
    registry = RegistryStore(url)
    (sync / f"ready-{claimer}").touch()
    deadline = time.monotonic() + 120
    while not (sync / "go").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never said go")
        time.sleep(0.002)
    try:
        claim = registry.claim_version(TASK, VERSION, bundle_sha256, claimer)
        return {"won": True, "claim": asdict(claim)}
    except VersionClaimConflict as exc:
        return {"won": False, "error": str(exc), "holder": asdict(exc.holder)}
    finally:
        registry.dispose()


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]), default=str))
