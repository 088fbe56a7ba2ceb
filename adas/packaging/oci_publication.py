"""Publication of one pack cell to the OCI registry: the use-case behind ``published_pack``.

The stored pack is packed into deterministic layer tars in a scratch directory, pushed (only
the blobs the registry lacks), tagged last, and described by a :class:`PublishedPackRef`. The
digest is then signed (cosign ``.sig``), the SBOM attested (``.att``) and attached (``.sbom``)
with the platform's signing key (:mod:`adas.packaging.oci_attachments`). Where a base image is
pinned and reachable, the serving image is built from the pinned digest's verified pull and
pushed beside it (:mod:`adas.packaging.serving_image`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from adas.catalog import load_catalog
from adas.config_errors import ConfigError
from adas.packaging.local_oci_registry import LocalRegistryError
from adas.packaging.oci import build_artifact, push_artifact
from adas.packaging.oci_attachments import attach_signatures
from adas.packaging.oci_client import OciError, RegistryClient
from adas.packaging.oci_deploy import deploy_repository
from adas.packaging.pack import BaseImage, load_serving_config
from adas.packaging.refs import OciLayerRef, PackRef, PublishedPackRef
from adas.packaging.serving import log_pack_artifact
from adas.packaging.serving_image import (
    SERVING_SUFFIX,
    ServingImage,
    build_serving_image,
    not_built_line,
    why_not_built,
)
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
                copies=len(layer.copies),
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
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PublishedPackRef:
    """:func:`publish_cell`, then the serving image (built from ``base_image``, default
    ``config/serving.yaml``'s, where pinned and reachable; else the line saying why not) and the
    pack's W&B artifact carrying the digest (what ``published_pack`` runs)."""
    signer = load_signing_key(AdasHome.from_env().keys)
    trust = load_trust_file(trust_file_path())
    published = publish_cell(
        store, pack, client, signer=signer, trust=trust, namespace=namespace, workdir=workdir, log=log
    )
    body = json.loads(store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256))
    base = base_image or load_serving_config().base_image
    reason = why_not_built(base)
    if reason is None:
        image = serving_image(client, published, base, trust, body, workdir=workdir, log=log)
    else:
        image = ServingImage(not_built_line(reason, published.reference))
    log(image.line)
    wandb_name = log_pack_artifact(pack.engine, body, store.uri(pack.prefix), published)
    return published.model_copy(
        update={
            "serving_image": image.line,
            "serving_image_reference": image.reference,
            "wandb_artifact": wandb_name,
        }
    )


def serving_image(
    client: RegistryClient,
    published: PublishedPackRef,
    base: BaseImage,
    trust: TrustFile,
    body: dict[str, Any],
    *,
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> ServingImage:
    """The serving image of a published pack: its model repository as deploys get it (the
    pinned digest pulled and verified), on ``base``, pushed beside the pack under the same tag."""
    model = body["model"]
    labels = {
        "org.opencontainers.image.title": str(model["name"]),
        "org.opencontainers.image.version": str(model["version"]),
        "org.opencontainers.image.created": str(body["signing"]["signed_at"]),
        "org.opencontainers.image.base.name": f"{base.repository}:{base.tag}",
        "org.opencontainers.image.base.digest": str(base.digest),
        "io.adas.pack.reference": published.reference,
    }
    with tempfile.TemporaryDirectory(prefix="serving-image-", dir=workdir) as tmp:
        models = Path(tmp) / "models"
        deploy_repository(client, published.reference, trust, models, Path(tmp) / "pull", log=log)
        return build_serving_image(
            base,
            models,
            client,
            f"{published.repository}/{SERVING_SUFFIX}",
            published.tag,
            labels,
            datetime.fromisoformat(str(body["signing"]["signed_at"])),
            Path(tmp),
            arch=load_catalog().targets[published.device].architecture,
        )
