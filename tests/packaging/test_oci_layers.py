"""The OCI artifact of a pack, without a registry: deterministic layers, grouping, ModelPack
config and manifest, names and tags, credentials from the environment only."""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

from adas.packaging.oci import (
    ARTIFACT_TYPE,
    CODE_TAR,
    CONFIG_MEDIA_TYPE,
    DOC_TAR,
    WEIGHT_CONFIG_TAR,
    WEIGHT_TAR,
    OciPackError,
    build_artifact,
    layer_group,
    oci_repository,
    oci_tag,
    write_layer_tar,
)
from adas.packaging.oci_client import (
    PASSWORD_ENV,
    TOKEN_ENV,
    USERNAME_ENV,
    Credentials,
    OciError,
    credentials_from_env,
    parse_challenge,
)
from adas.packaging.refs import PackRef
from adas.storage import ArtifactIntegrityError, LocalArtifactStore, sha256_bytes
from tests.packaging.oci_packs import make_pack, stored_pack_files
from tests.registry.packs import MODEL, TASK


@pytest.fixture
def pack(store: LocalArtifactStore, tmp_path: Path) -> PackRef:
    return make_pack(store, tmp_path / "work", tmp_path / "keys")


def _members(tar_path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(tar_path) as tar:
        return tar.getmembers()


def test_layer_tar_ignores_disk_metadata_and_order(tmp_path: Path) -> None:
    """Same bytes, other mtimes, modes and insertion order: the same digest; headers zeroed."""
    data = {"b/z.txt": b"zz", "a.bin": b"\x00" * 1000, "b/a.txt": b"aa"}
    first, second = tmp_path / "one", tmp_path / "two"
    for root, order, mode, mtime in (
        (first, sorted(data), 0o600, 1),
        (second, sorted(data, reverse=True), 0o755, 2e9),
    ):
        for rel in order:
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data[rel])
            p.chmod(mode)
            os.utime(p, (mtime, mtime))
    members = {root: {rel: (root / rel, sha256_bytes(data[rel])) for rel in data} for root in (first, second)}
    d1 = write_layer_tar(members[first], tmp_path / "one.tar")
    d2 = write_layer_tar(members[second], tmp_path / "two.tar")
    assert d1 == d2
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    infos = _members(tmp_path / "one.tar")
    assert [i.name for i in infos] == sorted(data)
    for i in infos:
        assert (i.mtime, i.uid, i.gid, i.uname, i.gname, i.mode, i.isreg()) == (0, 0, 0, "", "", 0o644, True)
    # Other bytes in one file: another digest.
    (second / "a.bin").write_bytes(b"\x01" * 1000)
    members[second]["a.bin"] = (second / "a.bin", sha256_bytes(b"\x01" * 1000))
    assert write_layer_tar(members[second], tmp_path / "three.tar")[0] != d1[0]


def test_layer_tar_refuses_a_file_that_is_not_what_was_verified(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"changed")
    with pytest.raises(OciPackError, match=f"f: changed while packing.*expected {sha256_bytes(b'original')}"):
        write_layer_tar({"f": (tmp_path / "f", sha256_bytes(b"original"))}, tmp_path / "l.tar")


def test_every_pack_file_lands_in_one_layer_of_its_group(
    store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    artifact = build_artifact(store, pack, tmp_path / "oci")
    files = stored_pack_files(store, pack)
    by_group = {layer.group: layer for layer in artifact.layers}
    assert [layer.group for layer in artifact.layers] == [
        "program",
        "engine",
        "triton",
        "config",
        "reports",
        "sbom",
        "signatures",
    ]
    assert set(by_group["program"].files) == {"model.pt2"}
    assert set(by_group["engine"].files) == {"model.onnx"}
    assert all(rel.startswith("triton/") for rel in by_group["triton"].files)
    # The repository's engine copy is not archived twice: the Triton layer names its source.
    assert by_group["triton"].copies == ((f"triton/{MODEL}_engine/1/model.onnx", "model.onnx"),)
    assert f"triton/{MODEL}_engine/1/model.onnx" not in by_group["triton"].files
    assert set(by_group["config"].files) == {"inference_config.json", "requirements.lock"}
    assert set(by_group["sbom"].files) == {"sbom.cdx.json"}
    sigs = by_group["signatures"].files
    assert {"pack_manifest.json", "pack_manifest.json.sig", "cosign.pub", "model.onnx.sig"} <= set(sigs)
    assert all(rel.endswith(".sig") or rel in ("pack_manifest.json", "cosign.pub") for rel in sigs)
    # Every file exactly once (archived, or a copy of an archived file), with the stored bytes.
    unpacked: dict[str, bytes] = {}
    for layer in artifact.layers:
        with tarfile.open(layer.path) as tar:
            for m in tar.getmembers():
                f = tar.extractfile(m)
                assert f is not None and m.name not in unpacked
                unpacked[m.name] = f.read()
        for rel, source in layer.copies:
            assert rel not in unpacked
            unpacked[rel] = unpacked[source]
    assert unpacked == files


def test_manifest_and_config_follow_modelpack(
    store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    artifact = build_artifact(store, pack, tmp_path / "oci")
    manifest = json.loads(artifact.manifest)
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"] == {
        "mediaType": CONFIG_MEDIA_TYPE,
        "digest": artifact.config_digest,
        "size": len(artifact.config),
    }
    media = {
        layer["annotations"]["org.opencontainers.image.title"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert media == {
        "program.tar": WEIGHT_TAR,
        "engine.tar": WEIGHT_TAR,
        "triton.tar": CODE_TAR,
        "config.tar": WEIGHT_CONFIG_TAR,
        "reports.tar": DOC_TAR,
        "sbom.tar": DOC_TAR,
        "signatures.tar": DOC_TAR,
    }
    ann = manifest["annotations"]
    assert ann["org.opencontainers.image.revision"] == "abcdef0"
    assert ann["io.adas.lineage.training-run-id"] == "test-run"
    assert ann["io.adas.target.precision"] == "fp32"
    assert ann["io.adas.pack.manifest-sha256"] == pack.manifest.sha256
    config = json.loads(artifact.config)
    # ModelPack's config schema is closed: only its own keys.
    assert set(config) == {"descriptor", "config", "modelfs"}
    assert set(config["descriptor"]) <= {
        "createdAt", "authors", "family", "name", "docURL", "sourceURL", "version", "revision",
        "vendor", "licenses", "title", "description",
    }  # fmt: skip
    assert set(config["config"]) <= {
        "architecture",
        "format",
        "paramSize",
        "precision",
        "quantization",
        "capabilities",
    }
    assert config["descriptor"]["name"] == MODEL and config["descriptor"]["version"] == "1.4.0"
    assert config["config"] == {"format": "onnx", "precision": "float32", "paramSize": "1.2M"}
    assert config["modelfs"] == {"type": "layers", "diffIds": [layer.digest for layer in artifact.layers]}
    assert artifact.repository == f"{TASK}/{MODEL}"
    assert artifact.tag == "1.4.0-x86-cpu-fp32-abcdef0"


def test_rebuilding_from_the_same_pack_gives_the_same_digest(
    store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    one = build_artifact(store, pack, tmp_path / "a")
    two = build_artifact(store, pack, tmp_path / "b")
    assert one.digest == two.digest and one.manifest == two.manifest


def test_a_tampered_stored_file_is_refused(store: LocalArtifactStore, pack: PackRef, tmp_path: Path) -> None:
    engine = pack.files["model.onnx"]
    path = Path(store.root) / engine.key
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match=r"model\.onnx"):
        build_artifact(store, pack, tmp_path / "oci")


def test_a_descriptor_that_differs_from_the_signed_manifest_is_refused(
    store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    files = {k: v for k, v in pack.files.items() if k != "sbom.cdx.json"}
    with pytest.raises(OciPackError, match=r"missing \['sbom.cdx.json'\]"):
        build_artifact(store, pack.model_copy(update={"files": files}), tmp_path / "oci")


def test_groups_names_and_tags() -> None:
    assert layer_group("model.plan") == "engine"
    assert layer_group("model.onnx") == "engine"
    assert layer_group("model.pt2") == "program"
    assert layer_group("bundle-model.onnx") == "program"
    assert layer_group("calibration.cache") == "engine"
    assert layer_group("calibration.cache.sig") == "signatures"
    assert layer_group("triton/m/1/model.onnx") == "triton"
    assert layer_group("container/Dockerfile") == "reports"
    assert layer_group("latency_report.json") == "reports"
    assert oci_repository(TASK, MODEL, namespace="adas/") == f"adas/{TASK}/{MODEL}"
    assert (
        oci_tag("1.2.3+build.5", "jetson-orin", "int8", "0123456789abc")
        == "1.2.3_build.5-jetson-orin-int8-0123456"
    )
    with pytest.raises(OciError, match="not a valid OCI repository"):
        oci_repository("Vehicle", MODEL)


def test_credentials_only_from_the_environment() -> None:
    assert credentials_from_env({}) is None
    creds = credentials_from_env({USERNAME_ENV: "AWS", PASSWORD_ENV: "s3cret"})
    assert creds == Credentials(username="AWS", password="s3cret")
    assert "s3cret" not in repr(creds)
    assert credentials_from_env({TOKEN_ENV: "tok"}) == Credentials(token="tok")
    with pytest.raises(OciError, match=f"set both {USERNAME_ENV} and {PASSWORD_ENV}"):
        credentials_from_env({USERNAME_ENV: "AWS"})
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull",
    }
