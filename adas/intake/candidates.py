"""Store validated candidate bundles: one atomic claim per version, files, then a manifest last.

* **The version claim** (build metadata stripped, so ``1.3.0+rebuild`` is ``1.3.0``): of two
  intakes of one version racing on any number of machines, one wins; the other is refused
  naming the winning bundle. The same bytes retried under the same version are idempotent.
  With a registry database (``claims``: the Dagster assets pass the registry resource's
  store) the claim is first one INSERT against the database's unique ``(task, version)``
  constraint: the database is trusted, records who claimed and when, and answers for every
  store. The store's own claim (``candidates/<task>/<version>/CLAIM.json``, a conditional
  create: ``O_EXCL``-style link locally, ``If-None-Match`` on S3) is kept beside it: it makes
  the artifact store refuse a second bundle by itself where no registry is wired in (the
  core's tools and tests) and for stores written before the database held claims. Both are
  taken in the same order by every intake, so they agree; where they ever disagree the
  version is refused (fail closed).
* **The files** then go under ``candidates/<task>/<version>/<sha12>/``, each atomic and hashed.
* **The manifest** (``BUNDLE.json``: every file and hash) is written last. A bundle without it
  is a partial store (an interrupted intake): never counted as taken in, completed by a retry.
"""

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from adas.intake.bundle import ValidatedBundle, validate_bundle
from adas.intake.claims import VersionClaims, VersionTaken
from adas.intake.contract import version_identity
from adas.intake.files import BundleRejected
from adas.intake.refs import CandidateRef, StoredFile
from adas.storage import ArtifactStore

CANDIDATES_PREFIX = "candidates"
CLAIM_FILE = "CLAIM.json"
MANIFEST_FILE = "BUNDLE.json"


def candidate_prefix(task: str, version: str, bundle_sha256: str) -> str:
    return f"{CANDIDATES_PREFIX}/{task}/{version_identity(version)}/{bundle_sha256[:12]}"


def _claim_key(task: str, version: str) -> str:
    return f"{CANDIDATES_PREFIX}/{task}/{version_identity(version)}/{CLAIM_FILE}"


def claimed_by(store: ArtifactStore, task: str, version: str) -> str | None:
    """The bundle sha256 that holds ``task``/``version``, or None if it is free."""
    key = _claim_key(task, version)
    if not store.exists(key):
        return None
    return str(json.loads(store.get_bytes(key))["bundle_sha256"])


def is_stored(store: ArtifactStore, bundle: ValidatedBundle) -> bool:
    """True once the bundle's manifest exists: its files are all stored and verified."""
    c = bundle.contract
    return store.exists(f"{candidate_prefix(c.task, c.version, bundle.digest.sha256)}/{MANIFEST_FILE}")


def _version_taken(bundle: ValidatedBundle, holder: str, by: str = "") -> BundleRejected:
    c = bundle.contract
    return BundleRejected(
        "contract.yaml: version",
        f"{c.task} {version_identity(c.version)} is already taken by bundle {holder[:12]}"
        + (f" ({by})" if by else "")
        + "; versions are immutable (build metadata does not make a new one), bump it",
    )


def claim_version(
    store: ArtifactStore, bundle: ValidatedBundle, claims: VersionClaims | None = None, claimer: str = ""
) -> None:
    """Claim the bundle's version atomically (in ``claims`` first, then in the store); raise
    naming the holder if another bundle has it."""
    c = bundle.contract
    if claims is not None:
        try:
            claims.claim_version(c.task, c.version, bundle.digest.sha256, (claimer or "intake")[:300])
        except VersionTaken as exc:
            held = exc.holder
            raise _version_taken(
                bundle, held.bundle_sha256, f"claimed by {held.claimer} at {held.claimed_at.isoformat()}"
            ) from exc
    record = {"task": c.task, "version": version_identity(c.version), "bundle_sha256": bundle.digest.sha256}
    store.put_bytes_if_absent(_claim_key(c.task, c.version), json.dumps(record, sort_keys=True).encode())
    holder = claimed_by(store, c.task, c.version)
    if holder != bundle.digest.sha256:
        raise _version_taken(bundle, str(holder))


def check_version_free(
    store: ArtifactStore, bundle: ValidatedBundle, claims: VersionClaims | None = None
) -> bool:
    """True if this exact bundle is already fully stored; raise if a *different* bundle holds its version."""
    c = bundle.contract
    if claims is not None:
        held = claims.version_claim(c.task, c.version)
        if held is not None and held.bundle_sha256 != bundle.digest.sha256:
            raise _version_taken(
                bundle, held.bundle_sha256, f"claimed by {held.claimer} at {held.claimed_at.isoformat()}"
            )
    holder = claimed_by(store, c.task, c.version)
    if holder is not None and holder != bundle.digest.sha256:
        raise _version_taken(bundle, holder)
    return holder is not None and is_stored(store, bundle)


@dataclass(frozen=True)
class ScreenedBundle:
    bundle: ValidatedBundle
    already_stored: bool


def screen_bundle(
    store: ArtifactStore, path: Path, workdir: Path, claims: VersionClaims | None = None
) -> ScreenedBundle:
    """Validate the bundle at ``path`` (a private copy goes to ``workdir``) and its version
    (against ``claims`` too, when given).

    Every failure, expected or not, is a :class:`BundleRejected` naming where: one bad bundle
    never stops the others. ``already_stored`` is True for an exact re-drop.
    """
    try:
        bundle = validate_bundle(path, workdir)
        return ScreenedBundle(bundle, check_version_free(store, bundle, claims))
    except BundleRejected:
        raise
    except (OSError, ValueError, RecursionError, MemoryError, UnicodeError) as exc:
        raise BundleRejected("bundle", f"could not be read: {type(exc).__name__}: {str(exc)[:300]}") from exc


def store_bundle(
    store: ArtifactStore, bundle: ValidatedBundle, source: str, claims: VersionClaims | None = None
) -> CandidateRef:
    """Claim the version (``source`` is the claimer recorded in ``claims``), copy every file of
    intake's verified copy into the store (atomic, hashed, each hash checked against intake's),
    then write the manifest."""
    claim_version(store, bundle, claims, claimer=source)
    c = bundle.contract
    prefix = candidate_prefix(c.task, c.version, bundle.digest.sha256)
    files: dict[str, StoredFile] = {}
    for rel, sha in bundle.digest.files.items():
        key = f"{prefix}/{rel}"
        stored = store.put_file(key, bundle.path / rel)
        if stored.sha256 != sha:
            raise BundleRejected(
                rel, f"changed while being stored: hashed {sha} at intake, stored {stored.sha256}"
            )
        files[rel] = StoredFile(key=key, uri=store.uri(key), sha256=sha, size=bundle.digest.sizes[rel])
    manifest = {"bundle_sha256": bundle.digest.sha256, "files": bundle.digest.files}
    store.put_bytes(f"{prefix}/{MANIFEST_FILE}", json.dumps(manifest, indent=1, sort_keys=True).encode())
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
