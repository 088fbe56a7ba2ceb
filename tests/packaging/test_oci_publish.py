"""A pack cell published to a real OCI registry (Debian's docker-registry, CNCF Distribution
2.8, started per test on loopback) and pulled back by digest; skopeo as the independent client.

Faults: the registry down at push time, a blob tampered in the registry's storage, a push
killed mid-upload."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from adas.packaging.local_oci_registry import LocalOciRegistry, registry_available
from adas.packaging.oci import (
    LAYER_COPIES,
    TITLE,
    Artifact,
    OciPullError,
    build_artifact,
    publish_pack_oci,
    pull_artifact,
    push_artifact,
)
from adas.packaging.oci_client import OciRegistryUnreachableError, RegistryClient
from adas.packaging.refs import PackRef
from adas.packaging.signing import check_pack
from adas.packaging.triton_server import free_port
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.settings import REPO_ROOT
from adas.storage import LocalArtifactStore
from tests.packaging.oci_packs import make_pack, stored_pack_files, tree

pytestmark = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)
CHUNK = 64 * 1024  # small chunks: the engine and Triton layers go up in several PATCHes


def _quiet(_: str) -> None:
    pass


@pytest.fixture
def pack(store: LocalArtifactStore, tmp_path: Path) -> PackRef:
    return make_pack(store, tmp_path / "work", tmp_path / "keys")


def _blob_count(registry: LocalOciRegistry) -> int:
    return len(list((registry.storage / "docker/registry/v2/blobs/sha256").glob("*/*/data")))


def test_push_then_pull_by_digest_is_byte_identical_and_still_verifies(
    registry: LocalOciRegistry,
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
) -> None:
    pushed = publish_pack_oci(store, pack, client, tmp_path / "oci", log=_quiet, chunk_size=CHUNK)
    assert pushed.reference == f"{registry.address}/{pushed.repository}@{pushed.digest}"
    assert pushed.tag == "1.4.0-x86-cpu-fp32-abcdef0"
    assert client.manifest_digest(pushed.repository, pushed.tag) == pushed.digest
    assert pushed.skipped == () and len(pushed.uploaded) == 8  # seven layers and the config

    dest = tmp_path / "pulled" / "pack"
    pulled = pull_artifact(client, pushed.repository, pushed.digest, dest, log=_quiet)
    assert pulled.path == dest
    assert tree(dest) == stored_pack_files(store, pack)
    # The pulled directory is the signed pack: it verifies against the trust root.
    check = check_pack(dest, load_trust_file(tmp_path / "keys" / TRUST_FILE))
    assert check.ok, check.problems
    assert [p.name for p in dest.parent.iterdir()] == ["pack"]  # no temporary directory left


def test_identical_bytes_pushed_twice_one_digest_nothing_uploaded(
    registry: LocalOciRegistry,
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
) -> None:
    first = publish_pack_oci(store, pack, client, tmp_path / "a", log=_quiet)
    blobs = _blob_count(registry)
    # Re-packed from scratch in another folder: the same tars, the same manifest.
    second = publish_pack_oci(store, pack, client, tmp_path / "b", log=_quiet)
    assert second.digest == first.digest
    assert second.uploaded == () and second.bytes_uploaded == 0
    assert set(second.skipped) == set(first.uploaded)
    assert _blob_count(registry) == blobs
    assert client.tags(first.repository) == [first.tag]


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed")
def test_skopeo_reads_the_recorded_manifest_digest(
    registry: LocalOciRegistry,
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
) -> None:
    pushed = publish_pack_oci(store, pack, client, tmp_path / "oci", log=_quiet)
    for ref in (f"{pushed.repository}:{pushed.tag}", f"{pushed.repository}@{pushed.digest}"):
        raw = subprocess.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{registry.address}/{ref}"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == pushed.digest, ref
    manifest = json.loads(raw)
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"


def test_registry_down_at_push_time_names_the_url(
    store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(OciRegistryUnreachableError, match=f"OCI registry {url} is unreachable"):
        publish_pack_oci(store, pack, RegistryClient(url, timeout_s=5), tmp_path / "oci", log=_quiet)


def test_a_blob_tampered_in_the_registry_is_refused_and_nothing_is_unpacked(
    registry: LocalOciRegistry,
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
) -> None:
    pushed = publish_pack_oci(store, pack, client, tmp_path / "oci", log=_quiet)
    manifest = json.loads(client.get_manifest(pushed.repository, pushed.digest))
    (index, triton), *_ = [
        (i, x) for i, x in enumerate(manifest["layers"]) if x["annotations"][TITLE] == "triton.tar"
    ]
    blob = registry.blob_path(triton["digest"])
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length: only the digest can tell
    blob.write_bytes(bytes(data))
    tampered = f"sha256:{hashlib.sha256(data).hexdigest()}"

    parent = tmp_path / "pulled"
    parent.mkdir()
    with pytest.raises(OciPullError) as info:
        pull_artifact(client, pushed.repository, pushed.digest, parent / "pack", log=_quiet)
    message = str(info.value)
    assert f"layer {index} (triton.tar)" in message
    assert tampered in message and triton["digest"] in message
    assert list(parent.iterdir()) == []  # target absent, no temporary directory left


def test_a_well_formed_artifact_that_is_not_the_signed_pack_is_refused(
    client: RegistryClient, store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    """Every blob matches its digest, but the SBOM layer was left out: the files are checked
    against the pack's signed file list too, and nothing is unpacked."""
    artifact = build_artifact(store, pack, tmp_path / "oci")
    drop = [layer.group for layer in artifact.layers].index("sbom")
    manifest, config = json.loads(artifact.manifest), json.loads(artifact.config)
    del manifest["layers"][drop]
    del config["modelfs"]["diffIds"][drop]
    config_bytes = json.dumps(config).encode()
    manifest["config"].update(
        digest=f"sha256:{hashlib.sha256(config_bytes).hexdigest()}", size=len(config_bytes)
    )
    forged = replace(
        artifact,
        layers=tuple(layer for layer in artifact.layers if layer.group != "sbom"),
        config=config_bytes,
        manifest=json.dumps(manifest).encode(),
    )
    pushed = push_artifact(client, forged, log=_quiet)
    dest = tmp_path / "pulled" / "pack"
    with pytest.raises(
        OciPullError, match=r"files differ from pack_manifest\.json \(missing \['sbom\.cdx\.json'\]"
    ):
        pull_artifact(client, pushed.repository, pushed.digest, dest, log=_quiet)
    assert list(dest.parent.iterdir()) == []


def _with_copies(artifact: Artifact, copies: str) -> Artifact:
    """``artifact`` with its Triton layer's copy map replaced by ``copies`` (the layers' bytes
    untouched: every blob still matches its digest)."""
    manifest = json.loads(artifact.manifest)
    (triton,) = [x for x in manifest["layers"] if x["annotations"][TITLE] == "triton.tar"]
    triton["annotations"][LAYER_COPIES] = copies
    return replace(artifact, manifest=json.dumps(manifest).encode())


@pytest.mark.parametrize(
    ("copies", "refusal"),
    [
        ('{"triton/m/1/model.onnx": "../../etc/passwd"}', r"unsafe path '\.\./\.\./etc/passwd'"),
        ('{"/tmp/evil": "model.onnx"}', r"unsafe path '/tmp/evil'"),
        ('{"triton/m/1/model.onnx": "nowhere.onnx"}', r"copies nowhere\.onnx, which no earlier layer holds"),
        ('["model.onnx"]', "is not an object of paths"),
        ("{not json", "is not JSON"),
    ],
)
def test_a_triton_layer_copy_map_that_is_unsafe_or_dangling_is_refused(
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
    copies: str,
    refusal: str,
) -> None:
    forged = _with_copies(build_artifact(store, pack, tmp_path / "oci"), copies)
    pushed = push_artifact(client, forged, log=_quiet)
    dest = tmp_path / "pulled" / "pack"
    with pytest.raises(OciPullError, match=refusal):
        pull_artifact(client, pushed.repository, pushed.digest, dest, log=_quiet)
    assert list(dest.parent.iterdir()) == []
    assert not (tmp_path / "tmp" / "evil").exists()


def test_a_copy_map_that_points_at_other_bytes_is_refused_by_the_signed_list(
    client: RegistryClient, store: LocalArtifactStore, pack: PackRef, tmp_path: Path
) -> None:
    """A map that fills the engine's place in the Triton repository with the program: every
    path is safe and present, and the signed file list still refuses it."""
    artifact = build_artifact(store, pack, tmp_path / "oci")
    (triton,) = [layer for layer in artifact.layers if layer.group == "triton"]
    ((engine_copy, _),) = triton.copies
    forged = _with_copies(artifact, json.dumps({engine_copy: "model.pt2"}))
    pushed = push_artifact(client, forged, log=_quiet)
    dest = tmp_path / "pulled" / "pack"
    with pytest.raises(OciPullError, match=f"{engine_copy} has sha256 "):
        pull_artifact(client, pushed.repository, pushed.digest, dest, log=_quiet)
    assert list(dest.parent.iterdir()) == []


# The pushing process of the interrupted-push test: it stops (sleeps) once one blob is complete
# and the next one is part-way through a chunked upload, and says so; the test then kills it.
_PUSHER = """
import sys, time
from pathlib import Path
from adas.packaging.oci import publish_pack_oci
from adas.packaging.oci_client import RegistryClient
from adas.packaging.refs import PackRef
from adas.storage import LocalArtifactStore

store_root, ref_file, url, workdir, chunk = sys.argv[1:6]
done = []

def log(msg):
    print(msg, flush=True)
    if ": uploaded " in msg:
        done.append(msg)

def progress(digest, sent, size):
    if done and sent < size:
        print(f"PAUSED {digest} {sent} {size}", flush=True)
        time.sleep(300)

pack = PackRef.model_validate_json(Path(ref_file).read_text())
publish_pack_oci(LocalArtifactStore(store_root), pack, RegistryClient(url), Path(workdir), log=log,
                 progress=progress, chunk_size=int(chunk))
print("FINISHED", flush=True)
"""


def test_a_push_killed_mid_upload_leaves_no_tag_and_a_retry_completes(
    registry: LocalOciRegistry,
    client: RegistryClient,
    store: LocalArtifactStore,
    pack: PackRef,
    tmp_path: Path,
) -> None:
    artifact = build_artifact(store, pack, tmp_path / "expected")
    ref_file = tmp_path / "pack.json"
    ref_file.write_text(pack.model_dump_json())
    args = [str(store.root), str(ref_file), registry.url, str(tmp_path / "oci-child"), str(CHUNK)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _PUSHER, *args], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("PAUSED"):
                break
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert lines and lines[-1].startswith("PAUSED"), lines
    _, partial, sent, size = lines[-1].split()
    assert 0 < int(sent) < int(size)
    engine, triton = artifact.layers[0], artifact.layers[1]
    assert partial == triton.digest
    # Killed mid-way: the complete blob is there, the partial one is not, and no tag exists.
    assert client.blob_exists(artifact.repository, engine.digest)
    assert not client.blob_exists(artifact.repository, triton.digest)
    assert client.manifest_digest(artifact.repository, artifact.tag) is None
    assert client.manifest_digest(artifact.repository, artifact.digest) is None
    assert artifact.tag not in client.tags(artifact.repository)

    retry = publish_pack_oci(store, pack, client, tmp_path / "oci-retry", log=_quiet, chunk_size=CHUNK)
    assert retry.digest == artifact.digest
    assert retry.skipped == (engine.digest,)  # what the killed push completed is not sent again
    assert triton.digest in retry.uploaded
    assert client.manifest_digest(artifact.repository, artifact.tag) == artifact.digest
    pulled = pull_artifact(client, retry.repository, retry.digest, tmp_path / "pulled", log=_quiet)
    assert tree(pulled.path) == stored_pack_files(store, pack)
