"""Retention: prune heavy intermediates of old model versions, never what an entry points to.

Packs are write-once (:mod:`adas.packaging.publish`): a re-materialization with other bytes
publishes a new pack folder instead of rewriting one, so old versions accumulate packs that no
registry entry references; those match ``packs/*`` and go. A pack an entry points to keeps every
file (the entry pins each one), whatever its version.
"""

import fnmatch

from pydantic import BaseModel

from adas.packaging.signing import MANIFEST_FILE
from adas.registry.config import RetentionPolicy
from adas.registry.models import semver_key
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
