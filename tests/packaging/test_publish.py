"""Write-once publication: engines and packs, once stored, are never rewritten in place.

A re-materialization from the same inputs proves the published pack intact and writes nothing;
one with other bytes publishes beside it (content-addressed) and the first pack keeps its bytes,
inodes and mtimes. Packing refuses a signing key the trust root does not vouch for.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adas.cell import Cell
from adas.intake.refs import CandidateRef, StoredFile
from adas.intake.stored import stored_file
from adas.packaging.keys import init_local_keys, rotate_local_keys
from adas.packaging.publish import PublishedConflictError, content_addressed_key, publish_file, put_once
from adas.packaging.refs import EngineRef, ExportRef, StagedRef, TritonRepositoryRef
from adas.packaging.serving import PackOutcome, assemble_pack, verify_stored_pack
from adas.packaging.signing import MANIFEST_FILE, SIGNING_KEY_ENV, SignatureError, create_signing_key
from adas.packaging.trust import TRUST_FILE, TRUSTED_KEYS_ENV, load_trust_file
from adas.settings import AdasHome
from adas.storage import ArtifactIntegrityError, LocalArtifactStore
from tests.registry.packs import LINEAGE, TASK, contract

VERSION = "1.3.0"
CELL = Cell("x86-cpu", "fp32").pack_prefix(TASK, VERSION)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file under ``root``: bytes, inode and mtime (ns)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[p.relative_to(root).as_posix()] = (p.read_bytes(), st.st_ino, st.st_mtime_ns)
    return out


@pytest.fixture
def home(adas_home: Path, monkeypatch: pytest.MonkeyPatch) -> AdasHome:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)
    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    home = AdasHome.from_env()
    init_local_keys(home.keys, home.keys / TRUST_FILE)
    return home


@pytest.fixture
def store(home: AdasHome) -> LocalArtifactStore:
    return LocalArtifactStore(home.artifacts)


# ----------------------------------------------------------------------------- single files


def test_publish_file_creates_proves_identical_or_goes_beside(store: LocalArtifactStore) -> None:
    key = f"{CELL}/model.onnx"
    first = publish_file(store, key, data=b"engine v1")
    assert first.key == key
    path = Path(store.root) / key
    before = snapshot(Path(store.root))
    # Identical bytes: nothing written (bytes, inode and mtime of the file and its record unchanged).
    assert publish_file(store, key, data=b"engine v1") == first
    assert snapshot(Path(store.root)) == before
    # Other bytes: stored beside it, content-addressed; the published file keeps its bytes.
    second = publish_file(store, key, data=b"engine v2")
    assert second.key == content_addressed_key(key, second.sha256)
    assert second.key == f"{CELL}/sha256-{second.sha256[:16]}/model.onnx"
    assert store.get_bytes(second.key) == b"engine v2"
    assert {k: v for k, v in snapshot(Path(store.root)).items() if k in before} == before
    assert path.read_bytes() == b"engine v1"
    # A rebuild giving v2 again reuses its content-addressed copy.
    assert publish_file(store, key, data=b"engine v2") == second


def test_put_once_never_overwrites(store: LocalArtifactStore) -> None:
    key = f"{CELL}/packs/abc/inference_config.json"
    put_once(store, key, b'{"score_threshold": 0.3}')
    with pytest.raises(
        PublishedConflictError, match=r"inference_config\.json: already published with sha256"
    ):
        put_once(store, key, b'{"score_threshold": 0.01}')
    assert store.get_bytes(key) == b'{"score_threshold": 0.3}'
    # Bytes changed behind the store's back are not "identical": the read refuses them.
    (Path(store.root) / key).write_bytes(b'{"score_threshold": 0.01}')
    with pytest.raises(ArtifactIntegrityError, match="sha256 mismatch"):
        put_once(store, key, b'{"score_threshold": 0.3}')


# ----------------------------------------------------------------------------- packs


def _put(store: LocalArtifactStore, key: str, data: bytes) -> StoredFile:
    return stored_file(store, key, data=data)


def inputs(store: LocalArtifactStore, engine_bytes: bytes) -> dict:
    """What the model_pack asset receives, stored as the upstream assets store it."""
    c = contract(VERSION)
    engine_file = publish_file(store, f"{CELL}/model.onnx", data=engine_bytes)
    triton = {
        "detector/config.pbtxt": b'name: "detector"\nbackend: "onnxruntime"\n',
        "detector/1/model.onnx": engine_bytes,
        "inference_config.json": json.dumps({"score_threshold": 0.3}).encode(),
    }
    files = {rel: publish_file(store, f"{CELL}/triton/{rel}", data=data) for rel, data in triton.items()}
    candidate = CandidateRef(
        bundle_sha256="b" * 64,
        prefix=f"candidates/{VERSION}",
        files={"model.pt2": engine_file},
        contract=c,
        lineage=LINEAGE,
        parameter_count=1000,
        received_at="2025-01-01T00:00:00+00:00",
        source="test",
    )
    export_prefix = f"models/{TASK}/{VERSION}/export"
    return {
        "engine": EngineRef(
            device="x86-cpu", precision="fp32", runtime="onnxruntime", candidate=candidate, engine=engine_file
        ),
        "triton": TritonRepositoryRef(
            prefix=f"{CELL}/triton",
            serving="python-onnxruntime",
            ensemble="detector",
            files=files,
            inference_config=files["inference_config.json"],
            digest="0" * 64,
        ),
        "export": ExportRef(
            candidate=candidate,
            onnx=engine_file,
            torch_program=_put(store, f"{export_prefix}/model.pt2", b"torch program"),
            coverage=_put(store, f"{export_prefix}/operator_coverage.json", b"{}"),
            runtimes_supported={"onnxruntime": True},
        ),
        "staged": StagedRef(
            candidate=candidate,
            requirements_lock=_put(store, f"models/{TASK}/{VERSION}/staging/requirements.lock", b"numpy\n"),
            environment=_put(store, f"models/{TASK}/{VERSION}/staging/environment.json", b"{}"),
        ),
    }


def pack(
    store: LocalArtifactStore, tmp_path: Path, name: str, engine_bytes: bytes = b"engine v1"
) -> PackOutcome:
    workdir = tmp_path / name
    workdir.mkdir()
    return assemble_pack(store, workdir=workdir, log=lambda _: None, **inputs(store, engine_bytes))


def manifest_of(store: LocalArtifactStore, outcome: PackOutcome) -> dict:
    return json.loads(store.get_bytes(outcome.ref.manifest.key, expected_sha256=outcome.ref.manifest.sha256))


@pytest.mark.slow
def test_rematerializing_a_published_pack(
    store: LocalArtifactStore, home: AdasHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The life of one version's pack: published once; re-materialized from the same inputs
    (nothing written, also after a key rotation); from a rebuilt engine (a new pack beside it);
    after the old key is revoked (a new pack by the new key). The first pack's bytes, inodes
    and mtimes never change, and every pack keeps verifying against the trust root unless its
    key is revoked."""
    trust = home.keys / TRUST_FILE
    first = pack(store, tmp_path, "first")
    ref = first.ref
    assert ref.prefix.startswith(f"{CELL}/packs/") and len(ref.prefix.rsplit("/", 1)[1]) == 16
    assert {"inference_config.json", "pack_manifest.json.sig", "model.onnx.sig", "cosign.pub"} <= set(
        ref.files
    )
    old_key = load_trust_file(trust).root.keys[0].key_id
    assert manifest_of(store, first)["signing"]["key_id"] == old_key
    assert verify_stored_pack(store, ref, load_trust_file(trust), tmp_path / "v1")
    packs_root = Path(store.root) / CELL / "packs"
    published = snapshot(packs_root)
    cell_files = snapshot(Path(store.root) / CELL)

    again = pack(store, tmp_path, "again")
    assert again.ref == ref and "nothing written" in again.summary_markdown
    assert snapshot(Path(store.root) / CELL) == cell_files  # not one byte, inode or mtime changed

    rotate_local_keys(home.keys, trust)
    after_rotation = pack(store, tmp_path, "after-rotation")
    assert after_rotation.ref == ref  # the old key's pack still verifies: reused, nothing written
    assert snapshot(packs_root) == published

    rebuilt = pack(store, tmp_path, "rebuilt", engine_bytes=b"engine v2")
    assert rebuilt.ref.prefix != ref.prefix and rebuilt.ref.engine.engine.key != ref.engine.engine.key
    new_key = manifest_of(store, rebuilt)["signing"]["key_id"]
    assert new_key != old_key  # new packs carry the new key id
    assert {k: v for k, v in snapshot(packs_root).items() if k in published} == published
    assert store.get_bytes(f"{CELL}/model.onnx") == b"engine v1"  # the published engine too
    for outcome in (first, rebuilt):
        assert verify_stored_pack(
            store, outcome.ref, load_trust_file(trust), tmp_path / outcome.ref.prefix[-16:]
        )

    body = yaml.safe_load(trust.read_text())
    next(k for k in body["keys"] if k["key_id"] == old_key)["revoked"] = True
    trust.write_text(yaml.safe_dump(body))
    with pytest.raises(SignatureError, match=rf"signed by key {old_key}, which is revoked"):
        verify_stored_pack(store, ref, load_trust_file(trust), tmp_path / "revoked")
    resigned = pack(store, tmp_path, "after-revocation")
    assert resigned.ref.prefix not in (ref.prefix, rebuilt.ref.prefix)
    assert manifest_of(store, resigned)["signing"]["key_id"] == new_key
    assert {k: v for k, v in snapshot(packs_root).items() if k in published} == published


def test_packing_refuses_an_untrusted_signing_key(
    store: LocalArtifactStore, home: AdasHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = create_signing_key(tmp_path / "elsewhere" / "fresh.pem")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "elsewhere" / "fresh.pem"))
    with pytest.raises(
        SignatureError, match=rf"cannot sign packs: signed by key {fresh.key_id}, which is not in"
    ):
        pack(store, tmp_path, "untrusted")
    assert not (Path(store.root) / CELL / "packs").exists()
    assert not any(MANIFEST_FILE in str(p) for p in Path(store.root).rglob("*"))
