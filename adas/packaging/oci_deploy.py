"""Deploy by digest: a Triton model repository filled by pulling a pinned OCI artifact.

What promotion, the local canary, rollback and ``adas-registry verify`` use. The artifact is
pulled by its digest only (:func:`adas.packaging.oci.pull_artifact`: the manifest against the
digest, every layer against the manifest, every file against the pack's file list), then the
signature attached in the registry (``sha256-<hex>.sig``) and the pack's own signed manifest are
verified against the trust root. Only then is the ``triton/`` tree moved into place, replacing
the old repository in two renames: a refusal leaves the destination exactly as it was.

A tag is only how people find an artifact: when the pinned tag now names another digest
(moved by someone else), the pinned digest is still what is deployed and the move is reported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from adas.packaging.oci import PulledArtifact, pull_artifact
from adas.packaging.oci_attachments import AttachmentCheck, verify_attachments
from adas.packaging.oci_client import DIGEST_RE, OciError, RegistryClient
from adas.packaging.signing import SIG_SUFFIX, check_pack
from adas.packaging.trust import TrustFile

TRITON_DIR = "triton"
SBOM_FILE = "sbom.cdx.json"


class DeployRefusedError(OciError):
    """The pinned artifact failed a check: nothing was served, the destination is untouched."""


@dataclass(frozen=True)
class OciReference:
    host: str
    repository: str
    digest: str

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}@{self.digest}"


def parse_reference(reference: str) -> OciReference:
    """``host[:port]/repository@sha256:<hex>`` (a reference by digest; a tag is refused)."""
    name, at, digest = reference.partition("@")
    host, slash, repository = name.partition("/")
    if not (at and slash and repository and DIGEST_RE.fullmatch(digest)):
        raise OciError(f"{reference!r} is not a reference by digest (host/repository@sha256:...)")
    return OciReference(host, repository, digest)


@dataclass
class VerifiedPull:
    """A pulled artifact whose layers, attached signature and signed pack all verified."""

    reference: str  # as pulled: the configured registry's host, the pinned repository and digest
    pulled: PulledArtifact
    key_id: str | None  # the key that signed the pack's manifest
    attachments: AttachmentCheck | None  # the .sig (and .att) verified in the registry
    warnings: list[str] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return self.pulled.path


def pull_verified(
    client: RegistryClient,
    reference: str,
    trust: TrustFile,
    dest: Path,
    *,
    tag: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> VerifiedPull:
    """Pull the pinned ``reference`` into ``dest`` (a new directory) and verify it; raises
    :class:`DeployRefusedError` (``dest`` removed) on any failed check."""
    ref = parse_reference(reference)
    warnings: list[str] = []
    if ref.host != client.host:
        # The digest names the bytes: a registry at another address (a changed local port, a
        # mirror) serves the same artifact or none.
        warnings.append(f"{reference} is pulled from the configured registry {client.host}")
    if tag:
        tag_name = tag.rpartition(":")[2] if "/" in tag else tag
        now = client.manifest_digest(ref.repository, tag_name)
        if now != ref.digest:
            warnings.append(
                f"tag {ref.repository}:{tag_name} now names {now or 'nothing'}, not the pinned "
                f"{ref.digest}: deploying the pinned digest"
            )
    where = f"{client.host}/{ref.repository}@{ref.digest}"
    try:
        pulled = pull_artifact(client, ref.repository, ref.digest, dest, log=log)
    except OciError as exc:
        raise DeployRefusedError(f"deploy of {where} refused, nothing served: {exc}") from exc
    try:
        sbom = pulled.path / SBOM_FILE
        attached = verify_attachments(
            client, ref.repository, ref.digest, trust, sbom.read_bytes() if sbom.is_file() else None
        )
        if attached is None:
            warnings.append(
                f"{where}: no signature attached (sha256-<hex>.sig); the pack's own signature is verified"
            )
        elif sbom.is_file() and attached.attestation_key_id is None:
            warnings.append(f"{where}: no SBOM attestation attached (sha256-<hex>.att)")
        check = check_pack(pulled.path, trust)
        if not check.ok:
            raise DeployRefusedError(f"{where}: {'; '.join(check.problems[:4])}")
    except OciError as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if isinstance(exc, DeployRefusedError):
            raise DeployRefusedError(f"deploy refused, nothing served: {exc}") from exc
        raise DeployRefusedError(f"deploy of {where} refused, nothing served: {exc}") from exc
    return VerifiedPull(where, pulled, check.key_id, attached, warnings)


def install_triton(pulled: VerifiedPull, dest: Path) -> Path:
    """Move the pulled ``triton/`` tree (the triton layer's files) to ``dest``, replacing what is there in two renames (the
    old repository is removed only once the new one is in place)."""
    source = pulled.path / TRITON_DIR
    if not source.is_dir():
        raise DeployRefusedError(f"{pulled.reference} has no {TRITON_DIR}/ layer: nothing to serve")
    # The per-file signatures (verified by check_pack) came with the signatures layer: what is
    # served is exactly the triton layer.
    for sig in source.rglob(f"*{SIG_SUFFIX}"):
        sig.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.old-", dir=dest.parent))
    if dest.exists():
        os.replace(dest, old / dest.name)
    os.rename(source, dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def deploy_repository(
    client: RegistryClient,
    reference: str,
    trust: TrustFile,
    dest: Path,
    workdir: Path,
    *,
    tag: str | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> VerifiedPull:
    """:func:`pull_verified` into a scratch directory under ``workdir``, then
    :func:`install_triton` at ``dest``; the scratch copy is removed."""
    workdir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="deploy-", dir=workdir))
    try:
        pulled = pull_verified(client, reference, trust, scratch / "pack", tag=tag, log=log)
        install_triton(pulled, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return pulled
