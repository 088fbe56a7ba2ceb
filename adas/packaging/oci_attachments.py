"""The pack's signature and SBOM attached to its artifact's digest in the OCI registry.

Distribution 2.8 (the local registry) has no referrers API, so attachments follow cosign's tag
convention: ``sha256-<hex of the artifact digest>.sig`` for the signature and
``sha256-<hex>.sbom`` for the SBOM (what ``cosign attach sbom`` writes and ``cosign download
sbom`` reads). Each attachment manifest also carries an OCI 1.1 ``subject`` naming the artifact,
so a registry with the referrers API (ECR, Harbor 2.8+) lists it there too.

The signature attachment carries the pack's existing signature, not a new one: its one layer is
the pack's ``pack_manifest.json`` (every file's sha256, the signing key id and time) with
``dev.cosignproject.cosign/signature`` = ``pack_manifest.json.sig`` (base64 DER ECDSA-P256 over
the layer's bytes: cosign's signature format). What differs from a cosign image signature: the
payload is our pack manifest, not a ``simplesigning`` payload naming
``critical.image.docker-manifest-digest``, and its media type is
``application/vnd.io.adas.pack-manifest.v1+json``. ``cosign verify --key`` therefore finds the tag
and checks the ECDSA signature but refuses the claim; ``cosign verify-blob --key`` on the layer
succeeds. The binding to the artifact digest is ours: the manifest names the pack manifest's
sha256 (``io.adas.pack.manifest-sha256``) and every layer's files must be the ones it lists.
(A cosign-native signature needs the signing key at publication time; packs are signed at
packing.) No ``.att`` (in-toto attestation) is attached: a DSSE envelope needs a new signature.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adas.packaging.oci_client import DIGEST_RE, OCI_MANIFEST, OciError, OciHttpError, RegistryClient
from adas.packaging.signing import SignatureError, load_public_key, verify_blob_bytes
from adas.packaging.trust import TrustFile, UntrustedKeyError

COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
PACK_MANIFEST_MEDIA_TYPE = "application/vnd.io.adas.pack-manifest.v1+json"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SIGNATURE_ARTIFACT_TYPE = "application/vnd.io.adas.pack-signature.v1"
SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
KEY_ID = "io.adas.signing-key-id"
SIGNED_AT = "io.adas.signed-at"
# The OCI "empty" config: attachments have no configuration of their own.
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


class AttachedSignatureError(OciError):
    """The signature attached to an artifact is missing what it needs, untrusted or wrong."""


def attachment_tag(digest: str, suffix: str) -> str:
    """cosign's tag for an attachment of ``digest``: ``sha256-<hex>.<suffix>``."""
    if not DIGEST_RE.fullmatch(digest):
        raise OciError(f"{digest!r} is not a sha256 digest")
    return f"{digest.replace(':', '-')}.{suffix}"


def _digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def _attach(
    client: RegistryClient,
    repository: str,
    subject: tuple[str, int],
    tag: str,
    artifact_type: str,
    layer: bytes,
    layer_media_type: str,
    annotations: dict[str, str],
) -> str:
    """Push one single-layer attachment manifest under ``tag``; its digest."""
    for blob in (EMPTY_CONFIG, layer):
        digest = _digest(blob)
        if not client.blob_exists(repository, digest):
            client.upload_blob(repository, digest, blob, len(blob))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": _digest(EMPTY_CONFIG), "size": len(EMPTY_CONFIG)},
        "layers": [
            {
                "mediaType": layer_media_type,
                "digest": _digest(layer),
                "size": len(layer),
                "annotations": annotations,
            }
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject[0], "size": subject[1]},
    }
    data = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    client.put_manifest(repository, tag, data)
    return _digest(data)


def attach_signature(
    client: RegistryClient,
    repository: str,
    subject: tuple[str, int],
    pack_manifest: bytes,
    signature_b64: str,
) -> str:
    """Attach the pack manifest and its signature to ``subject`` (digest, manifest size) under
    ``sha256-<hex>.sig``; returns the tag."""
    signing = json.loads(pack_manifest)["signing"]
    tag = attachment_tag(subject[0], "sig")
    _attach(
        client,
        repository,
        subject,
        tag,
        SIGNATURE_ARTIFACT_TYPE,
        pack_manifest,
        PACK_MANIFEST_MEDIA_TYPE,
        {
            COSIGN_SIGNATURE: signature_b64.strip(),
            KEY_ID: str(signing["key_id"]),
            SIGNED_AT: str(signing["signed_at"]),
        },
    )
    return tag


def attach_sbom(client: RegistryClient, repository: str, subject: tuple[str, int], sbom: bytes) -> str:
    """Attach the CycloneDX SBOM under ``sha256-<hex>.sbom`` (cosign's SBOM tag); returns the tag."""
    tag = attachment_tag(subject[0], "sbom")
    _attach(client, repository, subject, tag, SBOM_ARTIFACT_TYPE, sbom, SBOM_MEDIA_TYPE, {})
    return tag


@dataclass(frozen=True)
class AttachedSignature:
    tag: str
    pack_manifest: bytes
    signature_b64: str
    key_id: str


def fetch_signature(client: RegistryClient, repository: str, digest: str) -> AttachedSignature | None:
    """The signature attached to ``repository@digest`` (None when no ``.sig`` tag exists). The
    layer's bytes are checked against the attachment manifest's digest."""
    tag = attachment_tag(digest, "sig")
    try:
        data = client.get_manifest(repository, tag)
    except OciHttpError as exc:
        if exc.status == 404:
            return None
        raise
    manifest: dict[str, Any] = json.loads(data)
    layers = [x for x in manifest.get("layers") or [] if x.get("mediaType") == PACK_MANIFEST_MEDIA_TYPE]
    if len(layers) != 1 or COSIGN_SIGNATURE not in (layers[0].get("annotations") or {}):
        raise AttachedSignatureError(
            f"{client.host}/{repository}:{tag}: no {PACK_MANIFEST_MEDIA_TYPE} layer with a {COSIGN_SIGNATURE} annotation"
        )
    layer = layers[0]
    resp = client.request("GET", f"/v2/{repository}/blobs/{layer['digest']}")
    if _digest(resp.body) != layer["digest"]:
        raise AttachedSignatureError(
            f"{client.host}/{repository}:{tag}: signature payload refused: the registry sent "
            f"{_digest(resp.body)}, the attachment lists {layer['digest']}"
        )
    annotations = layer["annotations"]
    return AttachedSignature(tag, resp.body, annotations[COSIGN_SIGNATURE], str(annotations.get(KEY_ID, "")))


def verify_signature(
    attached: AttachedSignature, trust: TrustFile, pack_manifest_sha256: str, where: str
) -> str:
    """Check the attached signature against the trust root (a key trusted at the stated signing
    time) and that it signs the pack manifest the artifact carries; the key id. Refusals name
    the key id."""
    if hashlib.sha256(attached.pack_manifest).hexdigest() != pack_manifest_sha256:
        raise AttachedSignatureError(
            f"{where}: the attached signature signs pack manifest "
            f"{hashlib.sha256(attached.pack_manifest).hexdigest()}, the artifact carries {pack_manifest_sha256}"
        )
    try:
        signing = json.loads(attached.pack_manifest)["signing"]
        key_id, signed_at = str(signing["key_id"]), datetime.fromisoformat(str(signing["signed_at"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise AttachedSignatureError(f"{where}: the signed pack manifest names no key ({exc!r})") from exc
    try:
        trusted = trust.signer(key_id, signed_at)
    except UntrustedKeyError as exc:
        raise AttachedSignatureError(f"{where}: {exc}") from exc
    try:
        verify_blob_bytes(load_public_key(trusted.public_key), attached.pack_manifest, attached.signature_b64)
    except SignatureError as exc:
        raise AttachedSignatureError(f"{where}: signature does not verify with trusted key {key_id}") from exc
    return key_id
