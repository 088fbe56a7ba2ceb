"""Write-once publication: an engine or a pack, once stored, is never rewritten in place.

:func:`publish_file` stores a file at its usual key when the key is free, writes nothing when
the key already holds the very same bytes (re-hashed, not taken from the store's record), and
otherwise stores it under a content-addressed key beside it,
``<folder>/sha256-<first 16 hex>/<name>``: whatever a registry entry or an upstream
materialization recorded at the usual key keeps its bytes, and the new descriptor points to the
new key.

A pack is published as a whole under ``<cell prefix>/packs/<content id>/``, the content id being
the digest of its manifest's file list (:func:`pack_folder`): the folder can only ever hold one
content, so writing there is create-or-prove-identical (:func:`put_once`) and the manifest comes
last. A re-materialization whose inputs equal an already published, still verifying pack reuses
that pack and writes nothing (:mod:`adas.packaging.serving`).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from adas.intake.refs import StoredFile
from adas.packaging.signing import MANIFEST_FILE, MANIFEST_SIGNATURE, PackCheck, check_pack
from adas.packaging.trust import TrustFile
from adas.storage import ArtifactError, ArtifactIntegrityError, ArtifactStore, sha256_bytes

PACKS_DIR = "packs"
SHORT_ID_CHARS = 16  # hex characters of a content id in a key (64 bits)


class PublishedConflictError(RuntimeError):
    """A write-once key already holds other bytes; the message names the key and both hashes."""


def put_once(store: ArtifactStore, key: str, data: bytes) -> StoredFile:
    """Create ``key`` with ``data``, or prove it already holds ``data`` and write nothing.

    Raises :class:`PublishedConflictError` when it holds other bytes (nothing is overwritten),
    and the store's integrity error when the bytes there no longer match their own record.
    """
    sha = sha256_bytes(data)
    if not store.exists(key) and store.put_bytes_if_absent(key, data):
        return StoredFile(key=key, uri=store.uri(key), sha256=sha, size=len(data))
    # Stored before (by an earlier run, or a concurrent one just now): the same bytes, or a conflict.
    try:
        recorded = store.recorded_sha256(key)
    except ArtifactIntegrityError:
        # A writer died between its data and its hash record: the conditional create records
        # the hash of what is there (and writes nothing else).
        store.put_bytes_if_absent(key, data)
        recorded = store.recorded_sha256(key)
    if recorded != sha:
        raise PublishedConflictError(
            f"{store.uri(key)}: already published with sha256 {recorded}, refusing to replace it with {sha}"
        )
    path = store.fetch(key, expected_sha256=sha)  # proves the bytes, not only their record
    return StoredFile(key=key, uri=store.uri(key), sha256=sha, size=path.stat().st_size)


def content_addressed_key(key: str, sha256: str) -> str:
    """``a/b/name`` -> ``a/b/sha256-<first 16 hex>/name``."""
    p = PurePosixPath(key)
    return str(p.parent / f"sha256-{sha256[:SHORT_ID_CHARS]}" / p.name)


def publish_file(
    store: ArtifactStore, key: str, src: Path | None = None, data: bytes | None = None
) -> StoredFile:
    """Store write-once at ``key``, or at its content-addressed key when ``key`` holds other bytes."""
    body = Path(src).read_bytes() if src is not None else (data or b"")
    try:
        return put_once(store, key, body)
    except PublishedConflictError:
        return put_once(store, content_addressed_key(key, sha256_bytes(body)), body)


def pack_id(files: Mapping[str, str]) -> str:
    """Content id of a pack: sha256 over ``path NUL sha256 LF`` of every listed file, in path order."""
    text = "".join(f"{rel}\0{sha}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:SHORT_ID_CHARS]


def pack_folder(cell_prefix: str, files: Mapping[str, str]) -> str:
    """``models/<task>/<version>/<device>/<precision>/packs/<content id>``."""
    return f"{cell_prefix}/{PACKS_DIR}/{pack_id(files)}"


@dataclass(frozen=True)
class PublishedPack:
    """A complete pack in the store: its folder, manifest and every other file (with the
    manifest's signature) as stored."""

    prefix: str
    manifest: StoredFile
    files: dict[str, StoredFile]
    body: dict[str, Any]


def publish_pack(store: ArtifactStore, cell_prefix: str, pack_dir: Path) -> PublishedPack:
    """Store the signed pack in ``pack_dir`` under its content-addressed folder, write-once:
    every listed file, then the manifest's signature, then the manifest (the pack is complete,
    and visible as such, from that last write on)."""
    body = json.loads((pack_dir / MANIFEST_FILE).read_bytes())
    prefix = pack_folder(cell_prefix, body["files"])
    files = {
        rel: put_once(store, f"{prefix}/{rel}", (pack_dir / rel).read_bytes())
        for rel in sorted(body["files"])
    }
    files[MANIFEST_SIGNATURE] = put_once(
        store, f"{prefix}/{MANIFEST_SIGNATURE}", (pack_dir / MANIFEST_SIGNATURE).read_bytes()
    )
    manifest = put_once(store, f"{prefix}/{MANIFEST_FILE}", (pack_dir / MANIFEST_FILE).read_bytes())
    return PublishedPack(prefix, manifest, files, body)


def published_manifests(store: ArtifactStore, cell_prefix: str) -> list[str]:
    """Keys of the manifests of every complete pack published for a cell."""
    depth = cell_prefix.count("/") + 3  # <cell>/packs/<id>/pack_manifest.json
    return [
        k
        for k in store.list_keys(f"{cell_prefix}/{PACKS_DIR}/")
        if k.endswith(f"/{MANIFEST_FILE}") and k.count("/") == depth
    ]


def fetch_pack(
    store: ArtifactStore, prefix: str, body: Mapping[str, Any], dest: Path
) -> dict[str, StoredFile]:
    """Copy a published pack into ``dest``, every file checked against the manifest's sha256."""
    files = {}
    for rel, sha in sorted(body["files"].items()):
        files[rel] = _copy_out(store, f"{prefix}/{rel}", sha, dest / rel)
    files[MANIFEST_SIGNATURE] = _copy_out(
        store, f"{prefix}/{MANIFEST_SIGNATURE}", None, dest / MANIFEST_SIGNATURE
    )
    return files


def _copy_out(store: ArtifactStore, key: str, sha256: str | None, dest: Path) -> StoredFile:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.fetch(key, expected_sha256=sha256), dest)
    return StoredFile(
        key=key, uri=store.uri(key), sha256=store.recorded_sha256(key), size=dest.stat().st_size
    )


def find_published_pack(
    store: ArtifactStore,
    cell_prefix: str,
    inputs_digest: str,
    trust: TrustFile,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> tuple[PublishedPack, PackCheck] | None:
    """A complete pack of this cell built from the same inputs that still verifies against the
    trust root (copied to ``workdir``), or None. A pack that no longer verifies (tampered, or
    its key revoked) is never reused: it is named in the log and a new pack is made."""
    for key in published_manifests(store, cell_prefix):
        try:
            body = json.loads(store.get_bytes(key))
        except (ArtifactError, ValueError) as exc:
            log(f"{key}: skipped, unreadable ({exc})")
            continue
        if body.get("inputs_digest") != inputs_digest:
            continue
        prefix = key.removesuffix(f"/{MANIFEST_FILE}")
        local = workdir / PurePosixPath(prefix).name
        shutil.rmtree(local, ignore_errors=True)
        try:
            files = fetch_pack(store, prefix, body, local)
            manifest = _copy_out(store, key, None, local / MANIFEST_FILE)
        except (ArtifactError, OSError) as exc:
            log(f"{prefix}: same inputs, but not reusable: {exc}")
            continue
        check = check_pack(local, trust)
        if not check.ok:
            log(f"{prefix}: same inputs, but not reusable: {'; '.join(check.problems) or 'no files'}")
            continue
        return PublishedPack(prefix, manifest, files, body), check
    return None
