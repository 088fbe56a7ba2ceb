"""Store validated candidate bundles: content-addressed, so a re-drop is a no-op."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adas.intake.bundle import BundleRejected, ValidatedBundle, validate_bundle
from adas.intake.refs import CandidateRef, StoredFile
from adas.storage import ArtifactStore

CANDIDATES_PREFIX = "candidates"


def candidate_prefix(task: str, version: str, bundle_sha256: str) -> str:
    return f"{CANDIDATES_PREFIX}/{task}/{version}/{bundle_sha256[:12]}"


def stored_bundle_shas(store: ArtifactStore, task: str, version: str) -> set[str]:
    """Short hashes of bundles already stored under ``task``/``version``."""
    keys = store.list_keys(f"{CANDIDATES_PREFIX}/{task}/{version}/")
    return {k.split("/")[3] for k in keys if len(k.split("/")) > 4}


def check_version_free(store: ArtifactStore, bundle: ValidatedBundle) -> bool:
    """True if this exact bundle is already stored; reject a *different* bundle reusing a version."""
    c = bundle.contract
    taken = stored_bundle_shas(store, c.task, c.version)
    mine = bundle.digest.sha256[:12]
    others = sorted(taken - {mine})
    if others:
        raise BundleRejected(
            "contract.yaml: version",
            f"{c.task} {c.version} is already taken by bundle {others[0]}; versions are immutable, bump it",
        )
    return mine in taken


@dataclass(frozen=True)
class ScreenedBundle:
    bundle: ValidatedBundle
    already_stored: bool


def screen_bundle(store: ArtifactStore, path: Path) -> ScreenedBundle:
    """Validate the bundle at ``path`` against its contract and its version against the store.

    Raises :class:`BundleRejected` naming the field at fault (a bad bundle, or a different
    bundle reusing a stored version); ``already_stored`` is True for an exact re-drop.
    """
    bundle = validate_bundle(path)
    return ScreenedBundle(bundle, check_version_free(store, bundle))


def store_bundle(store: ArtifactStore, bundle: ValidatedBundle, source: str) -> CandidateRef:
    """Copy every bundle file into the store (atomic, hashed) and verify each hash matches intake's."""
    c = bundle.contract
    prefix = candidate_prefix(c.task, c.version, bundle.digest.sha256)
    files: dict[str, StoredFile] = {}
    for rel, sha in bundle.digest.files.items():
        key = f"{prefix}/{rel}"
        store.put_file(key, bundle.path / rel)
        recorded = store.recorded_sha256(key)
        if recorded != sha:
            raise BundleRejected(
                rel, f"changed while being stored: hashed {sha} at intake, stored {recorded}"
            )
        files[rel] = StoredFile(key=key, uri=store.uri(key), sha256=sha, size=bundle.digest.sizes[rel])
    return CandidateRef(
        bundle_sha256=bundle.digest.sha256,
        prefix=prefix,
        files=files,
        contract=c,
        lineage=bundle.lineage,
        parameter_count=bundle.parameter_count,
        received_at=datetime.now(UTC).isoformat(),
        source=source,
    )
