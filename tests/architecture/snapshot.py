"""Rewrite the committed definitions snapshot: ``python -m tests.architecture.snapshot``."""

import json

from adas_assets.definitions import defs
from tests.architecture.test_architecture import SNAPSHOT, definitions_listing

if __name__ == "__main__":
    SNAPSHOT.write_text(json.dumps(definitions_listing(defs), indent=2, sort_keys=True) + "\n")
    print(f"wrote {SNAPSHOT}")
