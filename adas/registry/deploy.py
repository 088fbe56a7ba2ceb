"""Deploying a registry entry: its Triton repository pulled from the OCI registry by the digest the
entry pins (:mod:`adas.packaging.oci_deploy`), never copied from the artifact store.

The one exception is an adopted baseline (the model already in production before the platform):
it was never packed, signed or published, so it has no artifact to pull; its repository is
copied from the store with every file re-hashed against the sha256 the entry pins, and the
deployment says so. Any other entry without an OCI reference is refused: it was registered before
publication, unless an ``oci_published`` event recorded the same pack's reference since.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adas.config_errors import ConfigError
from adas.packaging.local_oci_registry import LocalRegistryError
from adas.packaging.oci_client import OciError
from adas.packaging.oci_deploy import deploy_repository, pull_verified
from adas.packaging.oci_settings import OciRegistrySettings
from adas.packaging.trust import load_trust_file
from adas.registry.entries import triton_files
from adas.registry.models import Entry, RegistryError
from adas.registry.settings import PromotionSettings
from adas.registry.store import RegistryStore


class DeployRefused(RegistryError):
    """The entry's pinned artifact did not verify: nothing was served, the repository untouched."""


@dataclass
class Deployment:
    path: Path
    source: str  # the reference pulled, or "artifact store (adopted baseline)"
    key_id: str | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"source": self.source, "key_id": self.key_id, "warnings": self.warnings}


def oci_reference_of(registry: RegistryStore, entry: Entry) -> tuple[str, str | None]:
    """The entry's pinned reference and tag; else the latest ``oci_published`` event's (the same
    pack published after registration); else a refusal naming the entry."""
    pointers = entry.body.pointers
    if pointers.oci_reference:
        return pointers.oci_reference, pointers.oci_tag
    published = [
        e for e in registry.events(entry_id=entry.id, kinds=["oci_published"]) if e.entry_id == entry.id
    ]
    if published:
        payload = published[-1].payload
        return str(payload["oci_reference"]), payload.get("oci_tag")
    raise DeployRefused(
        f"{entry.ref} (entry #{entry.id}) was registered before publication: it pins no OCI reference "
        "and no oci_published event gives one. Publish its pack (published_pack) and register it again; "
        "nothing is deployed from the artifact store"
    )


def _copy_adopted(settings: PromotionSettings, entry: Entry, dest: Path) -> Deployment:
    files = triton_files(entry.body)
    if not files:
        raise RegistryError(f"{entry.ref} has no Triton repository: nothing to serve")
    shutil.rmtree(dest, ignore_errors=True)
    for rel, p in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(settings.store.fetch(p.key, expected_sha256=p.sha256), target)
    return Deployment(dest, "artifact store (adopted baseline: never packed or published)")


def deploy_entry(settings: PromotionSettings, entry: Entry, dest: Path) -> Deployment:
    """The entry's Triton repository at ``dest``: pulled by digest and verified (every layer, the
    attached signature and the signed pack against the trust root) before it replaces ``dest``."""
    if entry.body.adopted:
        return _copy_adopted(settings, entry, dest)
    reference, tag = oci_reference_of(settings.registry, entry)
    if settings.oci is None:
        raise DeployRefused(f"{entry.ref}: no OCI registry configured to pull {reference} from")
    if settings.trusted_keys is None:
        raise DeployRefused(f"{entry.ref}: no trust root configured: {reference} cannot be verified")
    try:
        trust = load_trust_file(settings.trusted_keys)
        pulled = deploy_repository(
            settings.oci.client(), reference, trust, dest, dest.parent / ".deploy", tag=tag
        )
    except (OciError, LocalRegistryError, ConfigError) as exc:
        raise DeployRefused(f"{entry.ref}: {exc}") from exc
    return Deployment(dest, pulled.reference, pulled.key_id, pulled.warnings)


@dataclass
class OciCheck:
    """``adas-registry verify`` against the OCI registry: what was checked, what failed."""

    reference: str | None
    layers: int = 0
    key_id: str | None = None
    attested: bool = False  # the SBOM attestation (.att) verified too
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_in_registry(
    registry: RegistryStore,
    entry: Entry,
    oci: OciRegistrySettings,
    trusted_keys: Path | None,
    workdir: Path,
) -> OciCheck | None:
    """Pull the entry's pinned digest into ``workdir`` and verify the manifest digest, every
    layer, the attached signature and the signed pack; None for an entry with nothing published
    (an adopted baseline, or registered before publication: reported by the caller)."""
    if entry.body.adopted:
        return None
    try:
        reference, tag = oci_reference_of(registry, entry)
    except DeployRefused:
        return None
    out = OciCheck(reference)
    if trusted_keys is None:
        out.problems.append("no trust root configured: no signature can be trusted")
        return out
    try:
        pulled = pull_verified(
            oci.client(), reference, load_trust_file(trusted_keys), workdir / "pack", tag=tag
        )
    except (OciError, LocalRegistryError, ConfigError) as exc:
        out.problems.append(str(exc))
        return out
    out.layers = len(pulled.pulled.manifest.get("layers") or [])
    out.key_id, out.warnings = pulled.key_id, pulled.warnings
    if pulled.attachments is not None:
        out.attested = pulled.attachments.attestation_key_id is not None
    return out
