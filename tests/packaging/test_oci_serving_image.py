"""#14 item 5 and item 4's last bit: with a base pinned and reachable, publication builds the
serving image (base + the model repository at /models, umoci and skopeo, no Docker daemon) and
pushes it by digest; otherwise the report says in one line why not (no base pinned in
config/serving.yaml, base unreachable or not found). The pack's W&B artifact (offline) carries
the digest the registry entry pins."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest

from adas.packaging.local_oci_registry import LocalOciRegistry, registry_available
from adas.packaging.oci import write_layer_tar
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_deploy import deploy_repository
from adas.packaging.oci_publication import publish_and_report
from adas.packaging.pack import BaseImage, load_serving_config
from adas.packaging.serving import OCI_WANDB_ENTRY
from adas.packaging.serving_image import base_location, serving_image_line
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.storage import LocalArtifactStore, sha256_bytes
from tests.packaging.oci_packs import make_pack, tree

needs_registry = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)
DIGEST = "sha256:" + "0" * 64
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_base_image_location_as_docker_reads_it() -> None:
    assert base_location(BaseImage(repository="nvcr.io/nvidia/tritonserver", tag="t")) == (
        "https://nvcr.io",
        "nvidia/tritonserver",
    )
    assert base_location(BaseImage(repository="ubuntu", tag="t")) == (
        "https://registry-1.docker.io",
        "library/ubuntu",
    )
    assert base_location(BaseImage(repository="127.0.0.1:5000/a/b", tag="t")) == (
        "http://127.0.0.1:5000",
        "a/b",
    )


def test_no_base_pinned_is_the_shipped_default_and_says_so_in_one_line() -> None:
    base = load_serving_config().base_image
    assert base.digest is None  # config/serving.yaml ships unpinned: nothing to build from
    line = serving_image_line(base, "h/r@" + DIGEST)
    assert "\n" not in line and "no base image pinned by digest in config/serving.yaml" in line
    assert line.endswith(f"the pack artifact h/r@{DIGEST} is what is published")


def test_a_pinned_base_that_is_unreachable_is_named_with_the_error() -> None:
    port = _closed_port()
    base = BaseImage(repository=f"127.0.0.1:{port}/nvidia/tritonserver", tag="25.03-py3", digest=DIGEST)
    line = serving_image_line(base, "h/r@x", timeout_s=2.0)
    assert "\n" not in line
    assert f"base 127.0.0.1:{port}/nvidia/tritonserver@{DIGEST} unreachable" in line
    assert f"http://127.0.0.1:{port}" in line and "the pack artifact h/r@x is what is published" in line


@needs_registry
def test_published_report_line_and_wandb_artifact_carry_the_digest(
    tmp_path: Path, adas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    pack = make_pack(store, tmp_path / "build", adas_home / "keys")  # the platform's local key
    with LocalOciRegistry(tmp_path / "oci") as reg:
        client = RegistryClient(reg.url)
        ref = publish_and_report(store, pack, client)
        assert ref.serving_image.startswith("serving image: none built, no base image pinned")
        assert ref.serving_image.endswith(f"the pack artifact {ref.reference} is what is published")

        assert ref.serving_image_reference is None
        # A base pinned in a reachable registry that does not hold it: named, nothing built.
        absent = BaseImage(repository=f"{reg.address}/{ref.repository}", tag="x", digest=DIGEST)
        assert f"not found in {reg.url}" in serving_image_line(absent, "p")

    assert ref.wandb_artifact == "test-detector-x86-cpu-fp32:1.4.0"
    (run_file,) = (adas_home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")
    logged = run_file.read_bytes()
    # The artifact record as W&B stored it: the digest in its metadata and the oci:// reference.
    assert f'"oci_digest":"{ref.digest}"'.encode() in logged
    assert f'"oci_reference":"{ref.reference}"'.encode() in logged
    assert f"oci://{ref.reference}".encode() in logged and OCI_WANDB_ENTRY.encode() in logged


def _push_json(client: RegistryClient, repository: str, data: dict[str, Any]) -> tuple[str, int]:
    blob = json.dumps(data).encode()
    digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
    client.upload_blob(repository, digest, blob, len(blob))
    return digest, len(blob)


def _tiny_base(registry: LocalOciRegistry, work: Path) -> BaseImage:
    """A multi-platform base (an index: linux/arm64 and linux/amd64, one layer each, marked by
    a file of its own), pushed to ``mirror/tritonserver`` and pinned by the index's digest."""
    client, repository = RegistryClient(registry.url), "mirror/tritonserver"
    entries = []
    for arch in ("arm64", "amd64"):
        marker = work / arch / "etc" / "base-marker"
        marker.parent.mkdir(parents=True)
        marker.write_text(f"the {arch} base\n")
        layer, size = write_layer_tar(
            {"etc/base-marker": (marker, sha256_bytes(marker.read_bytes()))}, work / f"{arch}.tar"
        )
        client.upload_blob(repository, layer, work / f"{arch}.tar", size)
        config = _push_json(client, repository, {
            "architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]},
            "config": {"Entrypoint": ["/opt/nvidia/entrypoint.sh"], "Labels": {"base": arch}},
            "history": [{"created": "2025-03-01T00:00:00Z", "created_by": "base"}],
        })  # fmt: skip
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config[0], "size": config[1]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": size}],
        }).encode()  # fmt: skip
        digest = client.put_manifest(repository, f"t-{arch}", manifest)
        entries.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                        "size": len(manifest), "platform": {"os": "linux", "architecture": arch}})  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    digest = client.put_manifest(repository, "t", index, media_type=OCI_INDEX)
    return BaseImage(repository=f"{registry.address}/{repository}", tag="t", digest=digest)


def _image(
    registry: LocalOciRegistry, reference: str, dest: Path
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """skopeo's copy of an image into a ``dir:`` layout: manifest, config, folder."""
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--src-tls-verify=false", "--preserve-digests",
         f"docker://{reference}", f"dir:{dest}"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    manifest = json.loads((dest / "manifest.json").read_bytes())
    config = json.loads((dest / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    return manifest, config, dest


def _layer_files(folder: Path, digest: str) -> dict[str, bytes]:
    with tarfile.open(folder / digest.removeprefix("sha256:"), "r:*") as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


@needs_registry
@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_a_pinned_reachable_base_gives_a_serving_image_pushed_by_digest(
    tmp_path: Path, adas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    pack = make_pack(store, tmp_path / "build", adas_home / "keys")
    with LocalOciRegistry(tmp_path / "oci") as reg:
        base = _tiny_base(reg, tmp_path / "base")
        client = RegistryClient(reg.url)
        ref = publish_and_report(store, pack, client, base_image=base)
        image = ref.serving_image_reference
        assert image is not None
        repository = f"{ref.repository}/serving"
        assert image.startswith(f"{reg.address}/{repository}@sha256:")
        assert ref.serving_image.startswith(
            f"serving image: built {reg.address}/{repository}:{ref.tag} = {image}"
        )
        # The recorded digest is what the registry serves under the pack's tag (skopeo reads it).
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{reg.address}/{repository}:{ref.tag}"],
            capture_output=True, check=True, timeout=60,
        ).stdout  # fmt: skip
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == image.rpartition("@")[2]

        manifest, config, folder = _image(reg, image, tmp_path / "image")
        base_manifest, _, _ = _image(reg, f"{base.repository}:t-amd64", tmp_path / "base-image")
        # The linux/amd64 base's layers untouched, then one layer: the Triton repository at
        # /models, byte for byte what a deploy of the pinned pack serves.
        assert manifest["layers"][:-1] == base_manifest["layers"]
        assert _layer_files(folder, manifest["layers"][0]["digest"]) == {
            "etc/base-marker": b"the amd64 base\n"
        }
        served = tmp_path / "served"
        deploy_repository(
            client, ref.reference, load_trust_file(adas_home / "keys" / TRUST_FILE), served, tmp_path / "s"
        )
        assert _layer_files(folder, manifest["layers"][-1]["digest"]) == {
            f"models/{k}": v for k, v in tree(served).items()
        }
        assert config["config"]["Cmd"] == ["tritonserver", "--model-repository=/models"]
        assert config["config"]["Entrypoint"] == ["/opt/nvidia/entrypoint.sh"]  # the base's, kept
        labels = config["config"]["Labels"]
        assert labels["base"] == "amd64" and labels["io.adas.pack.reference"] == ref.reference
        assert labels["org.opencontainers.image.base.digest"] == base.digest
        # The same pack published again: the same image digest (file times zeroed, times from the pack).
        again = publish_and_report(store, pack, client, base_image=base)
        assert again.serving_image_reference == image


@needs_registry
def test_a_base_pinned_elsewhere_but_unreachable_builds_nothing_and_publishes_the_pack(
    tmp_path: Path, adas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    pack = make_pack(store, tmp_path / "build", adas_home / "keys")
    base = BaseImage(repository=f"127.0.0.1:{_closed_port()}/nvidia/tritonserver", tag="t", digest=DIGEST)
    with LocalOciRegistry(tmp_path / "oci") as reg:
        ref = publish_and_report(store, pack, RegistryClient(reg.url), base_image=base)
        assert ref.serving_image_reference is None and "unreachable" in ref.serving_image
        assert RegistryClient(reg.url).tags(f"{ref.repository}/serving") == []
