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

from adas.packaging.local_oci_registry import LocalRegistryError
from adas.packaging.oci import build_artifact, push_artifact
from adas.packaging.oci_attachments import attach_sbom, attach_signature
from adas.packaging.oci_client import OciError, RegistryClient
from adas.packaging.pack import BaseImage, load_serving_config
from adas.packaging.refs import OciLayerRef, PackRef, PublishedPackRef
from adas.packaging.serving import log_pack_artifact
from adas.packaging.serving_image import serving_image_line
from adas.packaging.signing import MANIFEST_SIGNATURE
from adas.storage import ArtifactError, ArtifactStore

# What a failed publication raises: the registry (down, refusing, not ours on the local port)
# or the store (a pack file that no longer verifies). Each message names what failed.
SBOM_FILE = "sbom.cdx.json"
PUBLISH_ERRORS: tuple[type[Exception], ...] = (OciError, LocalRegistryError, ArtifactError)


def publish_cell(
    store: ArtifactStore,
    pack: PackRef,
    client: RegistryClient,
    *,
    namespace: str = "",
    workdir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> PublishedPackRef:
    """Push ``pack`` to ``client``'s registry; its reference, tag, digest and what was sent."""
    with tempfile.TemporaryDirectory(prefix="oci-pack-", dir=workdir) as tmp:
        artifact = build_artifact(store, pack, Path(tmp), namespace)
        pushed = push_artifact(client, artifact, log=log)
    # Attached after the artifact's tag: an attachment's subject must exist first.
    subject = (artifact.digest, len(artifact.manifest))
    manifest = store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256)
    sig = pack.files[MANIFEST_SIGNATURE]
    signature = store.get_bytes(sig.key, expected_sha256=sig.sha256).decode("ascii")
    log(f"attached {attach_signature(client, pushed.repository, subject, manifest, signature)}")
    if (sbom := pack.files.get(SBOM_FILE)) is not None:
        data = store.get_bytes(sbom.key, expected_sha256=sbom.sha256)
        log(f"attached {attach_sbom(client, pushed.repository, subject, data)}")
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
    published = publish_cell(store, pack, client, namespace=namespace, log=log)
    base = base_image or load_serving_config().base_image
    line = serving_image_line(base, published.reference)
    log(line)
    body = json.loads(store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256))
    wandb_name = log_pack_artifact(pack.engine, body, store.uri(pack.prefix), published)
    return published.model_copy(update={"serving_image": line, "wandb_artifact": wandb_name})
