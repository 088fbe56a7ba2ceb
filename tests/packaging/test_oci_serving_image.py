"""#14 item 5 and item 4's last bit: the publication report says in one line why no serving image
was built (no base pinned in config/serving.yaml, base unreachable, base reachable but no builder)
and the pack's W&B artifact (offline) carries the digest the registry entry pins."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from adas.packaging.local_oci_registry import LocalOciRegistry, registry_available
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_publication import publish_and_report
from adas.packaging.pack import BaseImage, load_serving_config
from adas.packaging.serving import OCI_WANDB_ENTRY
from adas.packaging.serving_image import base_location, serving_image_line
from adas.storage import LocalArtifactStore
from tests.packaging.oci_packs import make_pack

needs_registry = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)
DIGEST = "sha256:" + "0" * 64


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

        # A base pinned and present in a reachable registry: still no image, and it says why.
        repo = ref.repository
        present = BaseImage(repository=f"{reg.address}/{repo}", tag="x", digest=ref.digest)
        assert "reachable but no image builder (buildah/umoci)" in serving_image_line(present, "p")
        absent = BaseImage(repository=f"{reg.address}/{repo}", tag="x", digest=DIGEST)
        assert f"not found in {reg.url}" in serving_image_line(absent, "p")

    assert ref.wandb_artifact == "test-detector-x86-cpu-fp32:1.4.0"
    (run_file,) = (adas_home / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")
    logged = run_file.read_bytes()
    # The artifact record as W&B stored it: the digest in its metadata and the oci:// reference.
    assert f'"oci_digest":"{ref.digest}"'.encode() in logged
    assert f'"oci_reference":"{ref.reference}"'.encode() in logged
    assert f"oci://{ref.reference}".encode() in logged and OCI_WANDB_ENTRY.encode() in logged
