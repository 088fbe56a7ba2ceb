"""Artifacts described as the :class:`StoredFile` records that assets hand downstream, and the one
way to read them back: pinned to the sha256 the descriptor recorded when the file was written.

``read_file`` / ``fetch_file`` / ``read_json`` read one described file; :class:`DatasetFiles`
reads a stored dataset's files by name (frames, manifests) through the dataset's file index. The
store's own record (a ``.sha256`` sidecar, S3 object metadata) sits beside the bytes and can be
rewritten with them, so it is never what a downstream read trusts.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from adas.intake.refs import DatasetRef, ReplayBundleRef, StoredFile
from adas.storage import ArtifactIntegrityError, ArtifactNotFoundError, ArtifactStore, StoredArtifact

# The file index of a stored tree (a dataset): every file's name relative to the prefix, with
# the sha256 and size recorded as it was stored. Written last, so it also marks the tree complete.
FILE_INDEX = "file_index.json"


def as_stored_file(artifact: StoredArtifact) -> StoredFile:
    return StoredFile(key=artifact.key, uri=artifact.uri, sha256=artifact.sha256, size=artifact.size)


def stored_file(
    store: ArtifactStore, key: str, src: Path | None = None, data: bytes | None = None
) -> StoredFile:
    """Put a file (or bytes) and describe it with the hash the store recorded."""
    return as_stored_file(store.put_file(key, src) if src is not None else store.put_bytes(key, data or b""))


def existing_file(store: ArtifactStore, key: str) -> StoredFile:
    """Describe a file already in the store, as the store records it now (its bytes are read, so
    they match that record). This is where a description starts, not a downstream read: readers
    of the returned record are pinned to the hash it carries from here on."""
    data = store.get_bytes(key)
    return StoredFile(key=key, uri=store.uri(key), sha256=store.recorded_sha256(key), size=len(data))


class PinnedFile(Protocol):
    """What a pinned read needs: a store key and the sha256 recorded when it was written (a
    :class:`StoredFile` of a descriptor, a ``Pointer`` of a registry entry)."""

    @property
    def key(self) -> str: ...

    @property
    def sha256(self) -> str: ...


def read_file(store: ArtifactStore, f: PinnedFile) -> bytes:
    """The bytes of a described file, verified against the sha256 its descriptor pins."""
    return store.get_bytes(f.key, expected_sha256=f.sha256)


def fetch_file(store: ArtifactStore, f: PinnedFile) -> Path:
    """A local path holding a described file, verified against the sha256 its descriptor pins."""
    return store.fetch(f.key, expected_sha256=f.sha256)


def read_json(store: ArtifactStore, f: PinnedFile) -> Any:
    """The JSON body of a described file, verified against the sha256 its descriptor pins."""
    return json.loads(read_file(store, f))


def write_file_index(store: ArtifactStore, prefix: str, artifacts: Sequence[StoredArtifact]) -> StoredFile:
    """Store ``<prefix>/file_index.json`` pinning ``artifacts`` (as their writes recorded them)."""
    base = prefix.rstrip("/") + "/"
    files = {}
    for a in artifacts:
        if not a.key.startswith(base):
            raise ValueError(f"{a.key}: not under {base}, so not indexable there")
        files[a.key.removeprefix(base)] = {"sha256": a.sha256, "size": a.size}
    body = {"prefix": prefix.rstrip("/"), "files": dict(sorted(files.items()))}
    return stored_file(store, base + FILE_INDEX, data=json.dumps(body, indent=1).encode())


def read_file_index(store: ArtifactStore, index: StoredFile) -> dict[str, StoredFile]:
    """The files an index pins, by name relative to its prefix (the index itself read pinned)."""
    body = read_json(store, index)
    prefix = str(body["prefix"])
    out = {}
    for name, rec in body["files"].items():
        key = f"{prefix}/{name}"
        out[name] = StoredFile(key=key, uri=store.uri(key), sha256=str(rec["sha256"]), size=int(rec["size"]))
    return out


class DatasetFiles:
    """A stored dataset's files by name (``images/x.png``, ``golden_test.json``), each read
    against the sha256 the dataset's file index pinned when the dataset was stored."""

    def __init__(self, store: ArtifactStore, index: StoredFile | None, tag: str) -> None:
        if index is None:
            raise ArtifactIntegrityError(
                f"dataset {tag}: its descriptor has no file index (it was stored before frame reads "
                "were pinned), so no frame hash is recorded to read against; re-materialize "
                "golden_dataset and what reads it"
            )
        self.store, self.tag = store, tag
        self.files = read_file_index(store, index)

    @classmethod
    def of(cls, store: ArtifactStore, dataset: DatasetRef | ReplayBundleRef) -> DatasetFiles:
        """The files of a dataset as its descriptor (or its replay bundle's) pins them."""
        tag = dataset.tag if isinstance(dataset, DatasetRef) else dataset.dataset_tag
        return cls(store, dataset.file_index, tag)

    def file(self, name: str) -> StoredFile:
        try:
            return self.files[name]
        except KeyError:
            raise ArtifactNotFoundError(
                f"{name}: not in the file index of dataset {self.tag}, so it has no recorded "
                "hash to be read against"
            ) from None

    def read(self, name: str) -> bytes:
        return read_file(self.store, self.file(name))

    def fetch(self, name: str) -> Path:
        return fetch_file(self.store, self.file(name))

    def rgb_frames(self, names: Sequence[str]) -> np.ndarray:
        """uint8 RGB frames [N, H, W, 3], each image file read pinned."""
        frames = [np.asarray(Image.open(io.BytesIO(self.read(name))).convert("RGB")) for name in names]
        return np.stack(frames).astype(np.uint8)
