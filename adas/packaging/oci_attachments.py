"""Signature, SBOM attestation and SBOM attached to an artifact's digest, as cosign stores them.

Distribution 2.8 (the local registry) has no referrers API, so attachments follow cosign's tag
convention, and each is what a stock cosign writes there:

* ``sha256-<hex>.sig``: a cosign image signature (cosign's ``SIGNATURE_SPEC``). One layer
  ``application/vnd.dev.cosign.simplesigning.v1+json`` holding the "simple signing" payload
  (``critical.identity.docker-reference`` = the repository, ``critical.image.
  docker-manifest-digest`` = the artifact's digest, ``critical.type`` = ``cosign container image
  signature``; ``optional`` names the signing key id and time), annotation
  ``dev.cosignproject.cosign/signature`` = base64 DER ECDSA-P256 over the payload's bytes. So
  ``cosign verify --key trusted.pem R@sha256:<hex>`` verifies it, and so does a containers-image
  ``sigstoreSigned`` policy (``skopeo copy``; tested).
* ``sha256-<hex>.att``: a DSSE envelope (``application/vnd.dsse.envelope.v1+json``) around an
  in-toto Statement v1 whose subject is the artifact's digest and whose predicate is the
  CycloneDX SBOM (``predicateType https://cyclonedx.org/bom``): what ``cosign attest --type
  cyclonedx`` writes and ``cosign verify-attestation --key --type cyclonedx`` checks.
* ``sha256-<hex>.sbom``: the SBOM itself (``cosign download sbom``).

Each attachment manifest also carries an OCI 1.1 ``subject`` naming the artifact, so a registry
with the referrers API (ECR, Harbor 2.8+) lists it there too. The signing key signs at
publication (the pack's own ``pack_manifest.json.sig`` travels inside the artifact); signatures
are deterministic (RFC 6979), and a ``.sig`` that already verifies with a trusted key is kept, so
re-publishing identical bytes writes nothing new.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adas.packaging.oci_client import (
    DIGEST_RE,
    OCI_MANIFEST,
    OciError,
    OciHttpError,
    RegistryClient,
    blob_digest,
    canonical_json,
)
from adas.packaging.signing import SignatureError, Signer, load_public_key, verify_blob_bytes
from adas.packaging.trust import TrustFile, UntrustedKeyError

COSIGN_SIGNATURE = "dev.cosignproject.cosign/signature"
SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIMPLE_SIGNING_TYPE = "cosign container image signature"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
IN_TOTO_STATEMENT = "https://in-toto.io/Statement/v1"
CYCLONEDX_PREDICATE = "https://cyclonedx.org/bom"
SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SBOM_ARTIFACT_TYPE = "application/vnd.cyclonedx+json"
IMAGE_CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
KEY_ID = "io.adas.signing-key-id"
SIGNED_AT = "io.adas.signed-at"
# The OCI "empty" config: the SBOM attachment has no configuration of its own.
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"


class AttachedSignatureError(OciError):
    """The signature or attestation attached to an artifact is malformed, untrusted or wrong."""


def attachment_tag(digest: str, suffix: str) -> str:
    """cosign's tag for an attachment of ``digest``: ``sha256-<hex>.<suffix>``."""
    if not DIGEST_RE.fullmatch(digest):
        raise OciError(f"{digest!r} is not a sha256 digest")
    return f"{digest.replace(':', '-')}.{suffix}"


def _sign(signer: Signer, data: bytes) -> str:
    return base64.b64encode(signer.sign_digest(hashlib.sha256(data).digest())).decode("ascii")


def _cosign_config(layer: bytes) -> bytes:
    """The image config cosign gives its signature images (an empty image with one layer)."""
    return canonical_json(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [blob_digest(layer)]},
        }
    )


def _attach(
    client: RegistryClient,
    repository: str,
    subject: tuple[str, int],
    tag: str,
    layer: bytes,
    layer_media_type: str,
    annotations: dict[str, str],
    config: tuple[bytes, str],
    artifact_type: str | None = None,
) -> str:
    """Push one single-layer attachment manifest under ``tag``; its digest."""
    config_bytes, config_media_type = config
    for blob in (config_bytes, layer):
        digest = blob_digest(blob)
        if not client.blob_exists(repository, digest):
            client.upload_blob(repository, digest, blob, len(blob))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": config_media_type,
            "digest": blob_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": layer_media_type,
                "digest": blob_digest(layer),
                "size": len(layer),
                "annotations": annotations,
            }
        ],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject[0], "size": subject[1]},
    }
    if artifact_type:
        manifest["artifactType"] = artifact_type
    data = canonical_json(manifest)
    client.put_manifest(repository, tag, data)
    return blob_digest(data)


# ------------------------------------------------------------------------------- the signature


def simple_signing_payload(docker_reference: str, digest: str, key_id: str, signed_at: datetime) -> bytes:
    """cosign's signed claim: this repository's manifest ``digest``, signed by ``key_id`` then."""
    return canonical_json(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIMPLE_SIGNING_TYPE,
            },
            "optional": {KEY_ID: key_id, SIGNED_AT: signed_at.isoformat()},
        }
    )


def attach_signature(
    client: RegistryClient, repository: str, subject: tuple[str, int], signer: Signer, signed_at: datetime
) -> str:
    """Sign ``subject`` (digest, manifest size) as cosign does and attach it under
    ``sha256-<hex>.sig``; returns the tag."""
    tag = attachment_tag(subject[0], "sig")
    payload = simple_signing_payload(f"{client.host}/{repository}", subject[0], signer.key_id, signed_at)
    _attach(
        client,
        repository,
        subject,
        tag,
        payload,
        SIMPLE_SIGNING_MEDIA_TYPE,
        {COSIGN_SIGNATURE: _sign(signer, payload)},
        (_cosign_config(payload), IMAGE_CONFIG_MEDIA_TYPE),
    )
    return tag


@dataclass(frozen=True)
class AttachedSignature:
    tag: str
    payload: bytes
    signature_b64: str


def _single_layer(
    client: RegistryClient, repository: str, tag: str, media_type: str
) -> tuple[dict[str, Any], bytes] | None:
    """The one ``media_type`` layer of the attachment under ``tag`` and its bytes (checked
    against its digest); None when the tag does not exist."""
    where = f"{client.host}/{repository}:{tag}"
    try:
        data = client.get_manifest(repository, tag)
    except OciHttpError as exc:
        if exc.status == 404:
            return None
        raise
    try:
        layers = [x for x in json.loads(data).get("layers") or [] if x.get("mediaType") == media_type]
    except (ValueError, AttributeError) as exc:
        raise AttachedSignatureError(
            f"{where}: the attachment manifest is not an OCI manifest ({exc})"
        ) from exc
    if len(layers) != 1:
        raise AttachedSignatureError(f"{where}: expected one {media_type} layer, found {len(layers)}")
    layer = layers[0]
    body = client.request("GET", f"/v2/{repository}/blobs/{layer['digest']}").body
    if blob_digest(body) != layer["digest"]:
        raise AttachedSignatureError(
            f"{where}: payload refused: the registry sent {blob_digest(body)}, the attachment lists {layer['digest']}"
        )
    return layer, body


def fetch_signature(client: RegistryClient, repository: str, digest: str) -> AttachedSignature | None:
    """The cosign signature attached to ``repository@digest`` (None when no ``.sig`` tag exists)."""
    tag = attachment_tag(digest, "sig")
    found = _single_layer(client, repository, tag, SIMPLE_SIGNING_MEDIA_TYPE)
    if found is None:
        return None
    layer, payload = found
    signature = (layer.get("annotations") or {}).get(COSIGN_SIGNATURE)
    if not signature:
        raise AttachedSignatureError(f"{client.host}/{repository}:{tag}: no {COSIGN_SIGNATURE} annotation")
    return AttachedSignature(tag, payload, str(signature))


def _trusted_key(optional: Mapping[str, Any], trust: TrustFile, where: str) -> tuple[VerifiedSignature, Any]:
    """The key named in a payload's ``optional`` block, if trusted at the time it states."""
    try:
        key_id, signed_at = str(optional[KEY_ID]), datetime.fromisoformat(str(optional[SIGNED_AT]))
    except (KeyError, TypeError, ValueError) as exc:
        raise AttachedSignatureError(f"{where}: the payload names no signing key and time ({exc!r})") from exc
    if signed_at.tzinfo is None:
        raise AttachedSignatureError(f"{where}: {SIGNED_AT} {signed_at.isoformat()} has no time zone")
    try:
        return VerifiedSignature(key_id, signed_at), trust.signer(key_id, signed_at)
    except UntrustedKeyError as exc:
        raise AttachedSignatureError(f"{where}: {exc}") from exc


def _repository_of(docker_reference: str) -> str:
    """``host[:port]/repo/path`` -> ``repo/path`` (a mirror's host differs, the repository not)."""
    return docker_reference.partition("/")[2]


@dataclass(frozen=True)
class VerifiedSignature:
    key_id: str
    signed_at: datetime


def verify_signature(
    attached: AttachedSignature, trust: TrustFile, repository: str, digest: str, host: str
) -> VerifiedSignature:
    """Check the cosign signature: a key trusted at the stated signing time signed a claim on
    exactly ``repository@digest``. Refusals name the key id or the claim."""
    where = f"{host}/{repository}@{digest} ({attached.tag})"
    try:
        payload = json.loads(attached.payload)
        critical, optional = payload["critical"], payload.get("optional") or {}
        claimed, reference = (
            critical["image"]["docker-manifest-digest"],
            critical["identity"]["docker-reference"],
        )
        kind = critical["type"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AttachedSignatureError(f"{where}: not a simple signing payload ({exc!r})") from exc
    if kind != SIMPLE_SIGNING_TYPE:
        raise AttachedSignatureError(f"{where}: critical.type is {kind!r}, not {SIMPLE_SIGNING_TYPE!r}")
    if claimed != digest:
        raise AttachedSignatureError(f"{where}: the signature claims {claimed}, not the pinned {digest}")
    if _repository_of(str(reference)) != repository:
        raise AttachedSignatureError(
            f"{where}: the signature names repository {reference!r}, not {repository}"
        )
    verified, trusted = _trusted_key(optional, trust, where)
    try:
        verify_blob_bytes(load_public_key(trusted.public_key), attached.payload, attached.signature_b64)
    except SignatureError as exc:
        raise AttachedSignatureError(
            f"{where}: signature does not verify with trusted key {verified.key_id}"
        ) from exc
    return verified


# ----------------------------------------------------------------------------- the attestation


def dsse_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def sbom_statement(docker_reference: str, digest: str, sbom: Mapping[str, Any]) -> bytes:
    """An in-toto Statement v1: ``sbom`` (CycloneDX) describes ``docker_reference@digest``."""
    return canonical_json(
        {
            "_type": IN_TOTO_STATEMENT,
            "subject": [{"name": docker_reference, "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": CYCLONEDX_PREDICATE,
            "predicate": dict(sbom),
        }
    )


def attach_sbom_attestation(
    client: RegistryClient, repository: str, subject: tuple[str, int], sbom: bytes, signer: Signer
) -> str:
    """The SBOM as a signed in-toto attestation under ``sha256-<hex>.att``; returns the tag."""
    statement = sbom_statement(f"{client.host}/{repository}", subject[0], json.loads(sbom))
    envelope = canonical_json(
        {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(statement).decode("ascii"),
            "signatures": [
                {"keyid": signer.key_id, "sig": _sign(signer, dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement))}
            ],
        }
    )
    tag = attachment_tag(subject[0], "att")
    _attach(
        client,
        repository,
        subject,
        tag,
        envelope,
        DSSE_MEDIA_TYPE,
        {COSIGN_SIGNATURE: "", "predicateType": CYCLONEDX_PREDICATE},
        (_cosign_config(envelope), IMAGE_CONFIG_MEDIA_TYPE),
    )
    return tag


def verify_sbom_attestation(
    client: RegistryClient, repository: str, digest: str, trust: TrustFile, sbom: bytes, signed_at: datetime
) -> str | None:
    """Check the ``.att`` attestation: signed by a key trusted at ``signed_at`` (the time the
    ``.sig`` states: a DSSE envelope carries none), about ``digest``, carrying exactly ``sbom``
    (the pack's, compared as canonical JSON); the key id, or None when nothing is attached."""
    tag = attachment_tag(digest, "att")
    where = f"{client.host}/{repository}@{digest} ({tag})"
    found = _single_layer(client, repository, tag, DSSE_MEDIA_TYPE)
    if found is None:
        return None
    try:
        envelope = json.loads(found[1])
        statement_bytes = base64.b64decode(envelope["payload"], validate=True)
        (signature,) = envelope["signatures"]
        key_id, sig = str(signature["keyid"]), str(signature["sig"])
        statement = json.loads(statement_bytes)
        (subject,) = statement["subject"]
    except (ValueError, KeyError, TypeError) as exc:
        raise AttachedSignatureError(
            f"{where}: not a DSSE in-toto envelope with one signature ({exc!r})"
        ) from exc
    if (
        envelope.get("payloadType") != IN_TOTO_PAYLOAD_TYPE
        or statement.get("predicateType") != CYCLONEDX_PREDICATE
    ):
        raise AttachedSignatureError(f"{where}: not a CycloneDX in-toto attestation")
    if f"sha256:{subject.get('digest', {}).get('sha256')}" != digest:
        raise AttachedSignatureError(
            f"{where}: the attestation is about {subject.get('digest')}, not {digest}"
        )
    try:
        trusted = trust.signer(key_id, signed_at)
    except UntrustedKeyError as exc:
        raise AttachedSignatureError(f"{where}: {exc}") from exc
    try:
        verify_blob_bytes(
            load_public_key(trusted.public_key), dsse_pae(IN_TOTO_PAYLOAD_TYPE, statement_bytes), sig
        )
    except SignatureError as exc:
        raise AttachedSignatureError(
            f"{where}: attestation does not verify with trusted key {key_id}"
        ) from exc
    if canonical_json(statement["predicate"]) != canonical_json(json.loads(sbom)):
        raise AttachedSignatureError(f"{where}: the attested SBOM is not the pack's sbom.cdx.json")
    return key_id


@dataclass(frozen=True)
class AttachmentCheck:
    signature: VerifiedSignature
    attestation_key_id: str | None  # None: no .att attached


def verify_attachments(
    client: RegistryClient, repository: str, digest: str, trust: TrustFile, sbom: bytes | None
) -> AttachmentCheck | None:
    """The ``.sig`` (and, where the pack has an SBOM, the ``.att``) of ``repository@digest``
    verified against ``trust``; None when no signature is attached."""
    attached = fetch_signature(client, repository, digest)
    if attached is None:
        return None
    signature = verify_signature(attached, trust, repository, digest, client.host)
    attested = None
    if sbom is not None:
        attested = verify_sbom_attestation(client, repository, digest, trust, sbom, signature.signed_at)
    return AttachmentCheck(signature, attested)


def attach_signatures(
    client: RegistryClient,
    repository: str,
    subject: tuple[str, int],
    signer: Signer,
    signed_at: datetime,
    sbom: bytes | None,
    trust: TrustFile,
) -> list[str]:
    """Sign ``subject`` (``.sig``) and attest its SBOM (``.att``), then attach the SBOM
    (``.sbom``); the tags written. Attachments that already verify with a trusted key are kept,
    so re-publishing identical bytes writes nothing new."""
    try:
        kept = verify_attachments(client, repository, subject[0], trust, sbom)
    except AttachedSignatureError:
        kept = None  # malformed, or no longer trusted: signed afresh
    if kept is not None and (sbom is None or kept.attestation_key_id is not None):
        return []
    written = [attach_signature(client, repository, subject, signer, signed_at)]
    if sbom is not None:
        written.append(attach_sbom_attestation(client, repository, subject, sbom, signer))
        written.append(attach_sbom(client, repository, subject, sbom))
    return written


def attach_sbom(client: RegistryClient, repository: str, subject: tuple[str, int], sbom: bytes) -> str:
    """Attach the CycloneDX SBOM under ``sha256-<hex>.sbom`` (cosign's SBOM tag); returns the tag."""
    tag = attachment_tag(subject[0], "sbom")
    _attach(
        client,
        repository,
        subject,
        tag,
        sbom,
        SBOM_MEDIA_TYPE,
        {},
        (EMPTY_CONFIG, EMPTY_MEDIA_TYPE),
        artifact_type=SBOM_ARTIFACT_TYPE,
    )
    return tag
