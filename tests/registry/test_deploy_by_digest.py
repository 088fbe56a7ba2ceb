"""Deploy by digest (#14): promotion, the canary and rollback fill Triton repositories by pulling the
entry's pinned OCI digest from a real registry (docker-registry), verified before anything is
served; never by copying from the artifact store (adopted baselines aside: never published)."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from adas.catalog import load_catalog
from adas.packaging.keys import init_local_keys
from adas.packaging.local_oci_registry import LocalOciRegistry, registry_available
from adas.packaging.oci_attachments import SBOM_MEDIA_TYPE, SIMPLE_SIGNING_MEDIA_TYPE, attachment_tag
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_deploy import DeployRefusedError, deploy_repository
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.registry.cli import main
from adas.registry.entries import entry_from_pack
from adas.registry.promotion import promote, rollback
from adas.registry.registration import register_entry
from tests.registry.packs import build_pack, publish_signed
from tests.registry.test_promotion import _stub_runner
from tests.registry.world import TARGET, World, make_world

pytestmark = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[LocalOciRegistry]:
    """A registry of this test's own: its blobs get tampered with."""
    with LocalOciRegistry(tmp_path / "oci-own") as reg:
        yield reg


def _capturing_runner(seen: dict[str, dict[str, bytes]]):  # type: ignore[no-untyped-def]
    stub = _stub_runner()

    def run(plan, production, candidate, traffic, progress):  # type: ignore[no-untyped-def]
        seen["candidate"] = _tree(candidate)
        return stub(plan, production, candidate, traffic, progress)

    return run


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _split(reference: str) -> tuple[str, str]:
    name, _, digest = reference.partition("@")
    return name.partition("/")[2], digest


def _manifest(world: World, reference: str) -> dict[str, Any]:
    repository, digest = _split(reference)
    assert world.oci is not None
    return json.loads(RegistryClient(world.oci.url).get_manifest(repository, digest))


def _triton_layer(world: World, reference: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The pinned artifact's triton layer and the Triton repository it makes, fetched with plain
    HTTP and untarred in memory: the layer's files plus the copies its annotation maps to files
    of earlier layers (the engine, archived once)."""
    repository, _ = _split(reference)
    assert world.oci is not None
    client = RegistryClient(world.oci.url)
    unpacked: dict[str, bytes] = {}
    for layer in _manifest(world, reference)["layers"]:
        blob = client.request("GET", f"/v2/{repository}/blobs/{layer['digest']}").body
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]
        copies = json.loads(layer["annotations"].get("io.adas.layer.copies", "{}"))
        files.update({dest: unpacked[source] for dest, source in copies.items()})
        unpacked.update(files)
        if layer["annotations"]["io.adas.layer.group"] == "triton":
            return layer, {rel.removeprefix("triton/"): data for rel, data in files.items()}
    raise AssertionError(f"{reference} has no triton layer")


def _promote(world: World, key: str = "promo-1", **kw: Any):  # type: ignore[no-untyped-def]
    return promote(
        kw.pop("settings", None) or world.settings(),
        kw.pop("entry", None) or world.candidate,
        actor="release-manager",
        reason="weekly release",
        idempotency_key=key,
        traffic=world.traffic(),
        **kw,
    )


def test_canary_serves_the_pinned_digest_byte_for_byte_even_after_its_tag_moved(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    pointers = world.candidate.body.pointers
    assert pointers.oci_reference and pointers.oci_tag
    repository, digest = _split(pointers.oci_reference)
    assert world.oci is not None
    client = RegistryClient(world.oci.url)
    # The signature and SBOM hang off the digest under cosign's tags.
    sig = json.loads(client.get_manifest(repository, attachment_tag(digest, "sig")))
    assert sig["subject"]["digest"] == digest and sig["layers"][0]["mediaType"] == SIMPLE_SIGNING_MEDIA_TYPE
    assert "dev.cosignproject.cosign/signature" in sig["layers"][0]["annotations"]
    att = json.loads(client.get_manifest(repository, attachment_tag(digest, "att")))
    assert att["layers"][0]["annotations"]["predicateType"] == "https://cyclonedx.org/bom"
    sbom = json.loads(client.get_manifest(repository, attachment_tag(digest, "sbom")))
    assert sbom["layers"][0]["mediaType"] == SBOM_MEDIA_TYPE
    # Someone moves the tag to another manifest of the repository.
    tag = pointers.oci_tag.rpartition(":")[2]
    moved_to = client.put_manifest(
        repository, tag, client.get_manifest(repository, attachment_tag(digest, "sig"))
    )
    assert moved_to != digest and client.manifest_digest(repository, tag) == moved_to

    seen: dict[str, dict[str, bytes]] = {}
    result = _promote(world, runner=_capturing_runner(seen))
    assert result.status == "promoted", result.message
    assert any(f"now names {moved_to}, not the pinned {digest}" in w for w in result.warnings), (
        result.warnings
    )
    _layer, files = _triton_layer(world, pointers.oci_reference)
    assert seen["candidate"] == files  # what the canary served is the pulled layer, byte for byte
    (started,) = world.registry.events(kinds=["rollout_started"], promotion_id=result.promotion_id)
    deployed = started.payload["deployed"]
    assert deployed["candidate"]["source"] == f"{world.oci.address}/{repository}@{digest}"
    assert deployed["production"]["source"].startswith("artifact store (adopted baseline")


def test_an_entry_registered_before_publication_is_refused_until_its_publication_is_recorded(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models, publish=False)
    world.approve_all()
    refused = _promote(world, runner=_stub_runner())
    assert refused.status == "refused"
    assert (
        f"{world.candidate.ref} (entry #{world.candidate.id}) was registered before publication"
        in refused.message
    )
    assert world.registry.target_state(TARGET).active_promotion is None  # the lock is released
    assert world.registry.alias_entry(TARGET, "production").version == "1.2.0"
    assert world.registry.events(kinds=["rollout_started"]) == []

    # The same pack published since: recorded as an oci_published event, which deploys it.
    assert world.oci is not None
    b = world.built
    published = publish_signed(world.store, b.pack, RegistryClient(world.oci.url), world.key_dir)
    body = entry_from_pack(world.store, b.pack, b.gate, b.sim, b.report, load_catalog(), published=published)
    register_entry(world.registry, body, actor="ci")
    result = _promote(world, key="promo-2", runner=_stub_runner())
    assert result.status == "promoted", result.message


def test_a_tampered_blob_refuses_the_deploy_naming_the_layer_and_both_digests(
    tmp_path: Path,
    onnx_models: dict[str, Path],
    own_registry: LocalOciRegistry,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models, oci=own_registry)
    world.approve_all()
    reference = world.candidate.body.pointers.oci_reference
    assert reference
    layer, _files = _triton_layer(world, reference)
    blob = own_registry.blob_path(layer["digest"])
    data = bytearray(blob.read_bytes())
    data[700] ^= 0xFF  # inside the first file's bytes
    blob.write_bytes(bytes(data))

    # A repository already being served stays exactly as it was.
    served = tmp_path / "serving" / "production"
    (served / "m" / "1").mkdir(parents=True)
    (served / "m" / "1" / "model.onnx").write_bytes(b"what production serves")
    trust = load_trust_file(world.key_dir / TRUST_FILE)
    with pytest.raises(DeployRefusedError) as exc:
        deploy_repository(RegistryClient(own_registry.url), reference, trust, served, tmp_path / "scratch")
    message = str(exc.value)
    assert "(triton.tar) refused" in message and layer["digest"] in message
    assert "nothing served" in message and "the registry sent sha256:" in message
    assert _tree(served) == {"m/1/model.onnx": b"what production serves"}
    assert list((tmp_path / "scratch").iterdir()) == []

    # Through promotion: refused before any server starts, production untouched, lock released.
    result = _promote(world, runner=_stub_runner())
    assert result.status == "refused" and "(triton.tar) refused" in result.message
    assert world.registry.events(kinds=["rollout_started"]) == []
    assert world.registry.alias_entry(TARGET, "production").version == "1.2.0"
    assert world.registry.target_state(TARGET).active_promotion is None

    # adas-registry verify checks the same against the registry; exit status 1.
    code = _verify_cli(world, own_registry, tmp_path)
    out = capsys.readouterr().out
    assert code == 1 and "FAIL OCI" in out and "(triton.tar) refused" in out
    assert out.strip().endswith("VERIFICATION FAILED")


def _verify_cli(world: World, reg: LocalOciRegistry, home: Path) -> int:
    mp = pytest.MonkeyPatch()
    with mp.context() as m:
        m.setenv("ADAS_HOME", str(home))
        m.setenv("ADAS_ENV", "local")
        m.setenv("ADAS_OCI_REGISTRY", reg.url)
        m.delenv("ADAS_REGISTRY_URL", raising=False)
        url = world.registry.engine.url.render_as_string(hide_password=False)
        return main(["--url", url, "verify", "--entry", str(world.candidate.id)])


def test_a_signature_by_an_untrusted_key_refuses_deploy_and_rollback_naming_the_key(
    tmp_path: Path, onnx_models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    assert world.oci is not None
    reference = world.candidate.body.pointers.oci_reference
    assert reference
    key_id = json.loads(world.store.get_bytes(world.built.pack.manifest.key))["signing"]["key_id"]
    assert _verify_cli(world, world.oci, tmp_path) == 0
    out = capsys.readouterr().out
    assert "6 layers, the signature (.sig) and SBOM attestation (.att) and the signed pack verified" in out

    other = init_local_keys(
        tmp_path / "other-keys", tmp_path / "other-keys" / TRUST_FILE
    )  # knows not our key
    untrusted = load_trust_file(other.trust_file)
    with pytest.raises(DeployRefusedError, match=f"signed by key {key_id}, which is not in"):
        deploy_repository(RegistryClient(world.oci.url), reference, untrusted, tmp_path / "d", tmp_path / "s")
    assert not (tmp_path / "d").exists()

    # Promoted under the real trust root, then rolled back: the rollback's repository is pulled
    # too. 1.4.0 on top, so that the rollback target is a published entry, not the adopted one.
    assert _promote(world, runner=_stub_runner()).status == "promoted"
    b = build_pack(world.store, tmp_path / "build", world.key_dir, "1.4.0", onnx_models["agree"])
    published = publish_signed(world.store, b.pack, RegistryClient(world.oci.url), world.key_dir)
    body = entry_from_pack(world.store, b.pack, b.gate, b.sim, b.report, load_catalog(), published=published)
    newer, _ = register_entry(world.registry, body, actor="ci")
    world.approve_all(newer)
    assert _promote(world, key="promo-2", entry=newer, runner=_stub_runner()).status == "promoted"
    settings = world.settings()
    settings.trusted_keys = other.trust_file
    with pytest.raises(Exception, match=f"refusing to roll back: .*signed by key {key_id}, which is not in"):
        rollback(settings, TARGET, actor="oncall", reason="fleet issue", idempotency_key="rb-1")
    assert world.registry.alias_entry(TARGET, "production").version == "1.4.0"
    back = rollback(world.settings(), TARGET, actor="oncall", reason="fleet issue", idempotency_key="rb-2")
    assert back.status == "rolled_back" and back.version == "1.3.0"
