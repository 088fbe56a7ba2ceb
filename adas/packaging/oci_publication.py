"""Publication of one pack cell to the OCI registry: the use-case behind ``published_pack``.

The stored pack is packed into deterministic layer tars in a scratch directory, pushed (only
the blobs the registry lacks), tagged last, and described by a :class:`PublishedPackRef`. The
pack's signature and SBOM are then attached to the artifact's digest
(:mod:`adas.packaging.oci_attachments`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from adas.config_errors import ConfigError
from adas.packaging.local_oci_registry import LocalRegistryError
from adas.packaging.oci import build_artifact, push_artifact
from adas.packaging.oci_attachments import attach_signatures
from adas.packaging.oci_client import OciError, RegistryClient
from adas.packaging.pack import BaseImage, load_serving_config
from adas.packaging.refs import OciLayerRef, PackRef, PublishedPackRef
from adas.packaging.serving import log_pack_artifact
from adas.packaging.serving_image import serving_image_line
from adas.packaging.signing import SignatureError, Signer, load_signing_key
from adas.packaging.trust import TrustFile, UntrustedKeyError, load_trust_file, now_utc, trust_file_path
from adas.settings import AdasHome
from adas.storage import ArtifactError, ArtifactStore

# What a failed publication raises: the registry (down, refusing, not ours on the local port),
# the store (a pack file that no longer verifies) or the signing key and trust file. Each
# message names what failed.
SBOM_FILE = "sbom.cdx.json"
PUBLISH_ERRORS: tuple[type[Exception], ...] = (
    OciError,
    LocalRegistryError,
    ArtifactError,
    SignatureError,
    ConfigError,
)


def publish_cell(
    store: ArtifactStore,
    pack: PackRef,
    client: RegistryClient,
    *,
    signer: Signer,
    trust: TrustFile,
    namespace: str = "",
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PublishedPackRef:
    """Push ``pack`` to ``client``'s registry, then sign its digest and attest its SBOM with
    ``signer`` (a key ``trust`` vouches for now); its reference, tag, digest and what was sent."""
    signed_at = now_utc()
    try:
        trust.signer(signer.key_id, signed_at)
    except UntrustedKeyError as exc:  # refused before anything is pushed
        raise OciError(f"publishing {pack.prefix}: the signing key is not trusted: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="oci-pack-", dir=workdir) as tmp:
        artifact = build_artifact(store, pack, Path(tmp), namespace)
        pushed = push_artifact(client, artifact, log=log)
    # Attached after the artifact's tag: an attachment's subject must exist first.
    subject = (artifact.digest, len(artifact.manifest))
    sbom_ref = pack.files.get(SBOM_FILE)
    sbom = store.get_bytes(sbom_ref.key, expected_sha256=sbom_ref.sha256) if sbom_ref else None
    tags = attach_signatures(client, pushed.repository, subject, signer, signed_at, sbom, trust)
    log(f"attached {', '.join(tags)}" if tags else "signature and attestation already attached: kept")
    uploaded = set(pushed.uploaded)
    sizes = {layer.digest: layer.size for layer in artifact.layers}
    sizes[artifact.config_digest] = len(artifact.config)
    return PublishedPackRef(
        reference=pushed.reference,
        registry=client.host,
        repository=pushed.repository,
        tag=pushed.tag,
        digest=pushed.digest,
        device=pack.engine.device,
        precision=pack.engine.precision,
        pack_prefix=pack.prefix,
        pack_manifest_sha256=pack.manifest.sha256,
        config_digest=artifact.config_digest,
        layers=[
            OciLayerRef(
                group=layer.group,
                media_type=layer.media_type,
                digest=layer.digest,
                size=layer.size,
                files=len(layer.files),
                uploaded=layer.digest in uploaded,
            )
            for layer in artifact.layers
        ],
        blobs_pushed=len(pushed.uploaded),
        blobs_skipped=len(pushed.skipped),
        bytes_pushed=pushed.bytes_uploaded,
        bytes_skipped=sum(sizes[d] for d in pushed.skipped),
    )


def publish_and_report(
    store: ArtifactStore,
    pack: PackRef,
    client: RegistryClient,
    *,
    namespace: str = "",
    base_image: BaseImage | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PublishedPackRef:
    """:func:`publish_cell`, then the report's serving-image line (``base_image``, default
    ``config/serving.yaml``'s) and the pack's W&B artifact carrying the digest (what
    ``published_pack`` runs)."""
    signer = load_signing_key(AdasHome.from_env().keys)
    trust = load_trust_file(trust_file_path())
    published = publish_cell(store, pack, client, signer=signer, trust=trust, namespace=namespace, log=log)
    base = base_image or load_serving_config().base_image
    line = serving_image_line(base, published.reference)
    log(line)
    body = json.loads(store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256))
    wandb_name = log_pack_artifact(pack.engine, body, store.uri(pack.prefix), published)
    return published.model_copy(update={"serving_image": line, "wandb_artifact": wandb_name})
