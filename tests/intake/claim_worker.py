"""One claimer of the concurrent-claim test: validate my bundle, then try to store it.

``python -m tests.intake.claim_worker <root> <i>`` prints ``won`` or ``lost: <reason>``.
"""

import sys
from pathlib import Path

from adas.intake.candidates import screen_bundle, store_bundle
from adas.intake.files import BundleRejected
from adas.storage import LocalArtifactStore


def main(root: Path, i: int) -> str:
    store = LocalArtifactStore(root / "artifacts")
    try:
        # A claimer that finishes validating after the winner has claimed is refused here already.
        screened = screen_bundle(store, root / f"src-{i}", root / f"work-{i}")
        store_bundle(store, screened.bundle, f"claimer-{i}")
        return "won"
    except BundleRejected as exc:
        return f"lost: {exc.reason}"


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), int(sys.argv[2])))
