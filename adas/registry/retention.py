"""Retention: prune heavy intermediates of old model versions, never what an entry points to.

Packs are write-once (:mod:`adas.packaging.publish`): a re-materialization with other bytes
publishes a new pack folder instead of rewriting one, so old versions accumulate packs that no
registry entry references; those match ``packs/*`` and go. A pack an entry points to keeps every
file (the entry pins each one), whatever its version.

The same policy prunes the OCI registry (:func:`prune_oci_manifests`): pack manifests outside the
newest ``keep_versions`` of their repository that no entry pins (``oci_reference``) and no
``oci_published`` event names are deleted by digest, with their ``sha256-<hex>.sig``/``.sbom``
attachment tags. Deleting a manifest frees no bytes by itself: the registry's garbage collection
does (for the local registry: ``python -m adas.packaging.local_oci_registry gc``).
"""

import fnmatch
import json
import re
from dataclasses import dataclass, field

from pydantic import BaseModel

from adas.packaging.oci import ARTIFACT_TYPE
from adas.packaging.oci_client import DIGEST_RE, OciHttpError, RegistryClient
from adas.packaging.oci_deploy import parse_reference
from adas.packaging.signing import MANIFEST_FILE
from adas.registry.config import RetentionPolicy
from adas.registry.models import RegistryError, semver_key
from adas.registry.store import RegistryStore
from adas.storage import ArtifactStore


class PruneReport(BaseModel):
    deleted: list[str]
    protected: list[str]
    kept_versions: dict[str, list[str]]
    dry_run: bool

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"retention: {verb} {len(self.deleted)} heavy intermediates, skipped {len(self.protected)} that a "
            f"registry entry points to; kept versions {self.kept_versions}"
        )


def protected_keys(registry: RegistryStore) -> set[str]:
    """Every key a registry entry points to (never pruned)."""
    keys: set[str] = set()
    for e in registry.entries():
        p = e.body.pointers
        keys.update(x.key for x in p.artifacts.values())
        if p.manifest:
            keys.add(p.manifest.key)
        keys.update(x.key for x in e.body.reports.values())
        for v in (e.body.evaluation, e.body.simulation):
            if v and v.report:
                keys.add(v.report.key)
        if e.body.security.sbom:
            keys.add(e.body.security.sbom.key)
    return keys


def prune_intermediates(
    store: ArtifactStore, registry: RegistryStore, policy: RetentionPolicy, *, dry_run: bool = False
) -> PruneReport:
    """Delete heavy intermediates (``policy.heavy_patterns``) of model versions outside the newest
    ``keep_versions`` per task and not held by any alias; never a key an entry points to."""
    keys = protected_keys(registry)
    alias_versions: dict[str, set[str]] = {}
    for target in registry.targets():
        for e in registry.aliases(target).values():
            if e is not None:
                alias_versions.setdefault(e.body.task, set()).add(e.version)
    candidates = [
        k for k in store.list_keys("models/") if any(fnmatch.fnmatch(k, p) for p in policy.heavy_patterns)
    ]
    versions: dict[str, set[str]] = {}
    for k in store.list_keys("models/"):
        parts = k.split("/")
        if len(parts) > 3:
            try:
                semver_key(parts[2])
            except ValueError:
                continue
            versions.setdefault(parts[1], set()).add(parts[2])
    kept = {
        task: sorted(
            set(sorted(vs, key=semver_key)[-policy.keep_versions :]) | alias_versions.get(task, set()),
            key=semver_key,
        )
        for task, vs in versions.items()
    }
    deleted, protected = [], []
    # Manifests first: a pack interrupted mid-prune never looks complete (a pack is complete
    # only while its manifest exists).
    candidates.sort(key=lambda k: (not k.endswith(f"/{MANIFEST_FILE}"), k))
    for k in candidates:
        task, version = k.split("/")[1:3]
        if version in kept.get(task, []):
            continue
        if k in keys:
            protected.append(k)
            continue
        deleted.append(k)
        if not dry_run:
            store.delete(k)
    return PruneReport(deleted=deleted, protected=protected, kept_versions=kept, dry_run=dry_run)


# cosign's attachment tags: sha256-<hex of the subject digest>.<kind>
_ATTACHMENT_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.(sig|sbom|att)$")
VERSION_ANNOTATION = "org.opencontainers.image.version"


def protected_oci_references(registry: RegistryStore) -> dict[str, str]:
    """``digest -> reference`` of every OCI artifact an entry pins or an ``oci_published`` event
    names. Keyed by digest alone: the same bytes reached at another registry address (a changed
    local port, a mirror) are the same artifact."""
    refs: dict[str, str] = {}
    for e in registry.entries():
        if e.body.pointers.oci_reference:
            refs[parse_reference(e.body.pointers.oci_reference).digest] = e.body.pointers.oci_reference
    for ev in registry.events(kinds=["oci_published"]):
        ref = str(ev.payload.get("oci_reference") or "")
        if ref:
            refs[parse_reference(ref).digest] = ref
    return refs


@dataclass(frozen=True)
class OciManifestRow:
    """One pack manifest in the registry: what the dry run lists."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    version: str
    size: int  # manifest + config + layers, as the manifest lists them
    attachments: tuple[str, ...]  # sha256-<hex>.sig / .sbom tags, deleted with it

    def line(self) -> str:
        return f"{self.repository}@{self.digest}  {','.join(self.tags) or '-'}  {self.size} bytes"


@dataclass
class OciPruneReport:
    registry: str
    deleted: list[OciManifestRow] = field(default_factory=list)
    protected: list[OciManifestRow] = field(default_factory=list)  # pinned by an entry or event
    kept: list[OciManifestRow] = field(default_factory=list)  # within the newest keep_versions
    orphans: list[str] = field(default_factory=list)  # attachment tags whose subject is gone
    dry_run: bool = False

    @property
    def bytes_deleted(self) -> int:
        return sum(r.size for r in self.deleted)

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"OCI retention on {self.registry}: {verb} {len(self.deleted)} unreferenced pack manifests "
            f"({self.bytes_deleted} bytes listed) and {len(self.orphans)} orphaned attachments; "
            f"{len(self.protected)} pinned by the registry left, {len(self.kept)} recent unpinned left"
        )

    def lines(self) -> list[str]:
        verb = "would delete" if self.dry_run else "deleted"
        return [f"{verb} {r.line()}" for r in self.deleted] + [f"{verb} orphan {t}" for t in self.orphans]


def _repositories(client: RegistryClient, namespace: str, pinned: dict[str, str]) -> list[str]:
    """The repositories under ``namespace`` (all without one); a registry without the catalog API
    (ECR) is pruned in the repositories pinned references name."""
    prefix = f"{namespace.strip('/')}/" if namespace.strip("/") else ""
    try:
        names = client.catalog()
    except OciHttpError as exc:
        if exc.status not in (401, 403, 404, 405):
            raise
        names = [parse_reference(ref).repository for ref in pinned.values()]
    return sorted({n for n in names if n.startswith(prefix)})


def _scan(client: RegistryClient, repository: str) -> tuple[list[OciManifestRow], dict[str, list[str]]]:
    """The pack manifests of ``repository`` (grouped by digest) and its attachment tags by subject."""
    by_digest: dict[str, list[str]] = {}
    attachments: dict[str, list[str]] = {}
    for tag in client.tags(repository):
        if m := _ATTACHMENT_TAG.fullmatch(tag):
            attachments.setdefault(f"sha256:{m.group(1)}", []).append(tag)
            continue
        digest = client.manifest_digest(repository, tag)
        if digest and DIGEST_RE.fullmatch(digest):
            by_digest.setdefault(digest, []).append(tag)
    rows = []
    for digest, tags in sorted(by_digest.items()):
        data = client.get_manifest(repository, digest)
        manifest = json.loads(data)
        if manifest.get("artifactType") != ARTIFACT_TYPE:
            continue  # not a model pack: never ours to delete
        blobs = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
        rows.append(
            OciManifestRow(
                repository=repository,
                digest=digest,
                tags=tuple(sorted(tags)),
                version=str((manifest.get("annotations") or {}).get(VERSION_ANNOTATION, "")),
                size=len(data) + sum(int(b.get("size", 0)) for b in blobs),
                attachments=tuple(sorted(attachments.get(digest, []))),
            )
        )
    return rows, attachments


def _version_key(version: str) -> tuple[int, object]:
    try:
        return (1, semver_key(version))
    except ValueError:  # no semver: newest of all, so kept rather than guessed old
        return (2, version)


def prune_oci_manifests(
    client: RegistryClient,
    registry: RegistryStore,
    policy: RetentionPolicy,
    *,
    namespace: str = "",
    dry_run: bool = False,
) -> OciPruneReport:
    """Delete, by digest, the pack manifests of versions outside the newest ``keep_versions`` of
    their repository that no registry entry pins and no ``oci_published`` event names, each with
    its attachment tags; never a pinned one, whatever its version or tag. The newest versions
    stay even unpinned: a pack published but not yet registered must survive a concurrent prune."""
    pinned = protected_oci_references(registry)
    report = OciPruneReport(registry=client.host, dry_run=dry_run)
    for repository in _repositories(client, namespace, pinned):
        rows, attachments = _scan(client, repository)
        versions = sorted({r.version for r in rows}, key=_version_key)
        recent = set(versions[-policy.keep_versions :])
        present = {r.digest for r in rows}
        for row in rows:
            if row.digest in pinned:
                report.protected.append(row)
            elif row.version in recent:
                report.kept.append(row)
            else:
                report.deleted.append(row)
                if not dry_run:
                    # Attachments first: an interrupted prune leaves at worst an unsigned,
                    # unpinned pack (deleted by the next run), never a signature without subject.
                    for tag in row.attachments:
                        _delete_tag(client, repository, tag)
                    client.delete_manifest(repository, row.digest)
        # Attachments of a subject no longer in the registry (an earlier prune interrupted, or
        # a pack deleted by hand); a pinned subject's are never touched.
        for subject, tags in sorted(attachments.items()):
            if subject in present or subject in pinned:
                continue
            if client.manifest_digest(repository, subject) is not None:
                continue  # untagged but present (a moved tag): leave it with its signature
            for tag in tags:
                report.orphans.append(f"{repository}:{tag}")
                if not dry_run:
                    _delete_tag(client, repository, tag)
    return report


def _delete_tag(client: RegistryClient, repository: str, tag: str) -> None:
    """Distribution deletes manifests, not tags: the tag goes with the manifest it names."""
    digest = client.manifest_digest(repository, tag)
    if digest is None:
        return
    if not DIGEST_RE.fullmatch(digest):
        raise RegistryError(f"{client.host}/{repository}:{tag} answered no digest: not deleted")
    client.delete_manifest(repository, digest)
