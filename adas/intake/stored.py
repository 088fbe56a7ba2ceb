"""Artifacts described as the :class:`StoredFile` records that assets hand downstream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adas.intake.refs import StoredFile
from adas.storage import ArtifactStore, StoredArtifact


def as_stored_file(artifact: StoredArtifact) -> StoredFile:
    return StoredFile(key=artifact.key, uri=artifact.uri, sha256=artifact.sha256, size=artifact.size)


def stored_file(
    store: ArtifactStore, key: str, src: Path | None = None, data: bytes | None = None
) -> StoredFile:
    """Put a file (or bytes) and describe it with the hash the store recorded."""
    return as_stored_file(store.put_file(key, src) if src is not None else store.put_bytes(key, data or b""))


def existing_file(store: ArtifactStore, key: str) -> StoredFile:
    """Describe a file already in the store (its bytes are read, so its hash is verified)."""
    data = store.get_bytes(key)
    return StoredFile(key=key, uri=store.uri(key), sha256=store.recorded_sha256(key), size=len(data))


def read_json(store: ArtifactStore, f: StoredFile) -> Any:
    """The JSON body of a stored file, verified against the hash recorded when it was stored."""
    return json.loads(store.get_bytes(f.key, expected_sha256=f.sha256))
