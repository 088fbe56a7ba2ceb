"""The signature and SBOM attestation attached to a published pack, as cosign lays them out.

Read back by independent tools: skopeo fetches the ``.sig`` / ``.att`` images from the real
registry (Debian's skopeo is built without sigstore verification, and cosign is not packaged
here), openssl checks the ECDSA signatures over the simple-signing payload and over the DSSE
pre-authentication encoding written out from the DSSE specification. Then the refusals: a
signature claiming another digest, an attestation of another SBOM, a forged signature, a signing
key the trust root does not vouch for.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from adas.packaging.local_oci_registry import LocalOciRegistry, registry_available
from adas.packaging.oci_attachments import (
    COSIGN_SIGNATURE,
    AttachedSignatureError,
    attach_sbom_attestation,
    attach_signature,
    attachment_tag,
    verify_attachments,
)
from adas.packaging.oci_client import OciError, RegistryClient
from adas.packaging.oci_publication import publish_cell
from adas.packaging.refs import PackRef, PublishedPackRef
from adas.packaging.trust import TRUST_FILE, load_trust_file, now_utc
from adas.storage import LocalArtifactStore
from tests.packaging.oci_packs import make_pack, stored_pack_files
from tests.registry.packs import local_signer, publish_signed

pytestmark = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)
needs_tools = pytest.mark.skipif(
    shutil.which("skopeo") is None or shutil.which("openssl") is None, reason="skopeo and openssl needed"
)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def pack(store: LocalArtifactStore, tmp_path: Path, keys: Path) -> PackRef:
    return make_pack(store, tmp_path / "work", keys)


@pytest.fixture
def published(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, keys: Path
) -> PublishedPackRef:
    return publish_signed(store, pack, client, keys)


def _skopeo_copy(
    registry: LocalOciRegistry, repository: str, tag: str, dest: Path
) -> tuple[dict[str, Any], Path]:
    """``skopeo copy`` of an attachment image into a ``dir:`` layout: its manifest and folder."""
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests",
         f"docker://{registry.address}/{repository}:{tag}", f"dir:{dest}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return json.loads((dest / "manifest.json").read_bytes()), dest


def _openssl_verifies(public_pem: Path, data: bytes, signature_b64: str, tmp: Path) -> bool:
    (tmp / "data").write_bytes(data)
    (tmp / "sig.der").write_bytes(base64.b64decode(signature_b64))
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-verify", str(public_pem), "-signature", str(tmp / "sig.der"), str(tmp / "data")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return out.returncode == 0 and "Verified OK" in out.stdout


def _trusted_pem(keys: Path, tmp: Path) -> Path:
    """The trusted public key as the trust file lists it (what a verifier is handed)."""
    (entry,) = yaml.safe_load((keys / TRUST_FILE).read_text())["keys"]
    pem = tmp / "trusted.pem"
    pem.write_text(entry["public_key"])
    return pem


@needs_tools
def test_the_sig_is_a_cosign_simple_signing_signature_that_openssl_verifies(
    registry: LocalOciRegistry, published: PublishedPackRef, keys: Path, tmp_path: Path
) -> None:
    manifest, folder = _skopeo_copy(
        registry, published.repository, attachment_tag(published.digest, "sig"), tmp_path / "sig"
    )
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = (folder / layer["digest"].removeprefix("sha256:")).read_bytes()
    claim = json.loads(payload)
    assert claim["critical"] == {
        "identity": {"docker-reference": f"{registry.address}/{published.repository}"},
        "image": {"docker-manifest-digest": published.digest},
        "type": "cosign container image signature",
    }
    # cosign's signature image: an image config whose one diff id is the payload.
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    config = json.loads((folder / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    assert config["rootfs"] == {"type": "layers", "diff_ids": [layer["digest"]]}
    assert manifest["subject"]["digest"] == published.digest
    pem = _trusted_pem(keys, tmp_path)
    assert _openssl_verifies(pem, payload, layer["annotations"][COSIGN_SIGNATURE], tmp_path)
    assert not _openssl_verifies(
        pem, payload.replace(b"sha256:", b"sha256:0"), layer["annotations"][COSIGN_SIGNATURE], tmp_path
    )


@needs_tools
def test_the_att_is_a_dsse_in_toto_sbom_attestation_that_openssl_verifies(
    registry: LocalOciRegistry,
    store: LocalArtifactStore,
    pack: PackRef,
    published: PublishedPackRef,
    keys: Path,
    tmp_path: Path,
) -> None:
    manifest, folder = _skopeo_copy(
        registry, published.repository, attachment_tag(published.digest, "att"), tmp_path / "att"
    )
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"]["predicateType"] == "https://cyclonedx.org/bom"
    envelope = json.loads((folder / layer["digest"].removeprefix("sha256:")).read_bytes())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement_bytes = base64.b64decode(envelope["payload"])
    statement = json.loads(statement_bytes)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [
        {"name": f"{registry.address}/{published.repository}", "digest": {"sha256": published.digest[7:]}}
    ]
    assert statement["predicate"] == json.loads(stored_pack_files(store, pack)["sbom.cdx.json"])
    # DSSE v1 PAE, written out from the specification: "DSSEv1" SP len(type) SP type SP len(body) SP body.
    kind = b"application/vnd.in-toto+json"
    pae = (
        b"DSSEv1 "
        + str(len(kind)).encode()
        + b" "
        + kind
        + b" "
        + str(len(statement_bytes)).encode()
        + b" "
        + statement_bytes
    )
    (signature,) = envelope["signatures"]
    assert signature["keyid"] == local_signer(keys).key_id
    assert _openssl_verifies(_trusted_pem(keys, tmp_path), pae, signature["sig"], tmp_path)


def test_publishing_the_same_pack_again_keeps_its_attachments(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, published: PublishedPackRef, keys: Path
) -> None:
    tags = {
        s: client.manifest_digest(published.repository, attachment_tag(published.digest, s))
        for s in ("sig", "att", "sbom")
    }
    assert all(tags.values())
    again = publish_signed(store, pack, client, keys)
    assert again.digest == published.digest
    assert {
        s: client.manifest_digest(published.repository, attachment_tag(published.digest, s)) for s in tags
    } == tags


def _sbom(store: LocalArtifactStore, pack: PackRef) -> bytes:
    return stored_pack_files(store, pack)["sbom.cdx.json"]


def test_a_signature_that_claims_another_digest_is_refused(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, published: PublishedPackRef, keys: Path
) -> None:
    """A valid signature by the trusted key, of another artifact, moved under this digest's tag."""
    other = make_pack(store, Path(str(keys) + "-other-pack"), keys, version="1.5.0", seed=3)
    other_ref = publish_signed(store, other, client, keys)
    moved = client.get_manifest(other_ref.repository, attachment_tag(other_ref.digest, "sig"))
    client.put_manifest(published.repository, attachment_tag(published.digest, "sig"), moved)
    trust = load_trust_file(keys / TRUST_FILE)
    with pytest.raises(
        AttachedSignatureError,
        match=f"the signature claims {other_ref.digest}, not the pinned {published.digest}",
    ):
        verify_attachments(client, published.repository, published.digest, trust, _sbom(store, pack))


def test_an_attestation_of_another_sbom_is_refused(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, published: PublishedPackRef, keys: Path
) -> None:
    subject = (published.digest, 1)
    other_sbom = json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "components": []}).encode()
    attach_sbom_attestation(client, published.repository, subject, other_sbom, local_signer(keys))
    trust = load_trust_file(keys / TRUST_FILE)
    with pytest.raises(AttachedSignatureError, match=r"the attested SBOM is not the pack's sbom\.cdx\.json"):
        verify_attachments(client, published.repository, published.digest, trust, _sbom(store, pack))


def test_a_forged_signature_is_refused_naming_the_key(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, published: PublishedPackRef, keys: Path
) -> None:
    """The payload names the trusted key, but the signature is another key's."""
    impostor = local_signer(keys.parent / "impostor")

    class Claims:  # signs as the impostor while claiming the trusted key's id
        key_id = local_signer(keys).key_id
        sign_digest = staticmethod(impostor.sign_digest)
        public_key_pem = staticmethod(impostor.public_key_pem)

    attach_signature(client, published.repository, (published.digest, 1), Claims(), now_utc())
    trust = load_trust_file(keys / TRUST_FILE)
    with pytest.raises(
        AttachedSignatureError, match=f"signature does not verify with trusted key {Claims.key_id}"
    ):
        verify_attachments(client, published.repository, published.digest, trust, _sbom(store, pack))


def test_a_signing_key_the_trust_root_does_not_vouch_for_is_refused_before_anything_is_pushed(
    store: LocalArtifactStore, pack: PackRef, client: RegistryClient, keys: Path, tmp_path: Path
) -> None:
    stranger = local_signer(tmp_path / "stranger")
    with pytest.raises(OciError, match=f"the signing key is not trusted: signed by key {stranger.key_id}"):
        publish_cell(store, pack, client, signer=stranger, trust=load_trust_file(keys / TRUST_FILE))
    assert client.tags("vehicle-detection-2d/test-detector") == []
