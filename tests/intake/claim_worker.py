"""One claimer of the concurrent-claim test: validate my bundle, then try to store it.

``python -m tests.intake.claim_worker <root> <i>`` prints ``won`` or ``lost: <reason>``. The
version is claimed as the intake asset claims it: in the registry database
(``<root>/registry.db``, shared by every claimer) and then in the artifact store.
"""

import sys
from pathlib import Path

from adas.intake.candidates import screen_bundle, store_bundle
from adas.intake.files import BundleRejected
from adas.registry.store import RegistryStore
from adas.storage import LocalArtifactStore


def main(root: Path, i: int) -> str:
    store = LocalArtifactStore(root / "artifacts")
    registry = RegistryStore(f"sqlite:///{root / 'registry.db'}")
    try:
        # A claimer that finishes validating after the winner has claimed is refused here already.
        screened = screen_bundle(store, root / f"src-{i}", root / f"work-{i}", registry)
        store_bundle(store, screened.bundle, f"claimer-{i}", registry)
        return "won"
    except BundleRejected as exc:
        return f"lost: {exc.reason}"
    finally:
        registry.dispose()


if __name__ == "__main__":
    print(main(Path(sys.argv[1]), int(sys.argv[2])))
