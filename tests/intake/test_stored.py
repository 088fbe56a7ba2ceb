"""Dataset files read by name (frames, manifests) against the file index the golden dataset was
stored with (#18 item 5), not against the store's own records."""

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from adas.datasets.config import load_datagen_config
from adas.evaluation.inputs import load_split
from adas.intake import golden
from adas.intake.refs import DatasetRef
from adas.intake.stored import FILE_INDEX, DatasetFiles
from adas.packaging.build import load_frames
from adas.storage import (
    SIDECAR_SUFFIX,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    LocalArtifactStore,
    PinnedHashMismatchError,
    sha256_bytes,
)
from adas.values import decode_value, encode_value

FRAMES = [f"images/golden_test/{i}.png" for i in range(3)]


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 32, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _fake_generate(out_dir: Path, *_: Any, **__: Any) -> SimpleNamespace:
    """What the generator leaves in its folder, in miniature: manifests and three frames."""
    images = [{"id": i, "file_name": name} for i, name in enumerate(FRAMES)]
    coco = {"images": images, "annotations": [], "categories": []}
    for split in golden.SPLITS:
        (out_dir / f"{split}.json").write_text(json.dumps(coco if split == "golden_test" else {"images": []}))
    replay = {**coco, "sequences": [{"sequence_id": "s0", "image_ids": [0, 1, 2]}]}
    (out_dir / "replay_sequences.json").write_text(json.dumps(replay))
    meta = {"config_hash": "0" * 64, "frame_size": [8, 32], "counts": {"golden_test": 3}}
    (out_dir / "dataset.json").write_text(json.dumps(meta))
    for i, name in enumerate(FRAMES):
        (out_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / name).write_bytes(_png(40 * i))
    return SimpleNamespace(seconds=0.1)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalArtifactStore:
    monkeypatch.setattr(golden, "generate_dataset", _fake_generate)
    return LocalArtifactStore(root=str(tmp_path / "artifacts"))


def _store_dataset(store: LocalArtifactStore) -> golden.GoldenDataset:
    return golden.store_golden_dataset(store, load_datagen_config(), "tiny", workers=1, log=lambda _: None)


def _rewrite(store: LocalArtifactStore, key: str, data: bytes) -> None:
    """New bytes with a ``.sha256`` sidecar rewritten to match (what an attacker does)."""
    path = Path(store.root) / key
    path.write_bytes(data)
    path.with_name(path.name + SIDECAR_SUFFIX).write_text(f"{sha256_bytes(data)}  {path.name}\n")


def test_a_tampered_frame_is_refused_at_every_dataset_read(store: LocalArtifactStore) -> None:
    stored = _store_dataset(store)
    ref = stored.ref
    assert not stored.reused and ref.file_index is not None
    assert ref.file_index.key == f"{ref.prefix}/{FILE_INDEX}"
    files = DatasetFiles.of(store, ref)
    assert set(FRAMES) <= set(files.files) and files.file("golden_test.json") == ref.manifests["golden_test"]
    assert load_frames(store, ref, FRAMES).shape == (3, 8, 32, 3)

    frame_key = f"{ref.prefix}/{FRAMES[1]}"
    pinned, evil = sha256_bytes(store.get_bytes(frame_key)), _png(255)
    _rewrite(store, frame_key, evil)
    coco = json.loads(DatasetFiles.of(store, ref).read("golden_test.json"))
    reads = {
        "DatasetFiles": lambda: DatasetFiles.of(store, ref).read(FRAMES[1]),
        "packaging load_frames": lambda: load_frames(store, ref, FRAMES),
        "evaluation load_split": lambda: load_split(DatasetFiles.of(store, ref), coco, (8, 32)),
    }
    for where, read in reads.items():
        with pytest.raises(PinnedHashMismatchError) as exc:
            read()
        message = str(exc.value)
        assert store.uri(frame_key) in message, where
        assert pinned in message and sha256_bytes(evil) in message, where

    # The next materialization reuses the stored dataset and its index: the frame stays refused.
    again = _store_dataset(store)
    assert again.reused and again.ref.file_index == ref.file_index
    with pytest.raises(PinnedHashMismatchError):
        DatasetFiles.of(store, again.ref).read(FRAMES[1])


def test_a_rewritten_file_index_is_refused(store: LocalArtifactStore) -> None:
    ref = _store_dataset(store).ref
    assert ref.file_index is not None
    index = json.loads(store.get_bytes(ref.file_index.key))
    evil = _png(255)
    index["files"][FRAMES[0]] = {"sha256": sha256_bytes(evil), "size": len(evil)}
    _rewrite(store, f"{ref.prefix}/{FRAMES[0]}", evil)
    _rewrite(store, ref.file_index.key, json.dumps(index).encode())
    with pytest.raises(PinnedHashMismatchError, match=ref.file_index.sha256):
        DatasetFiles.of(store, ref)


def test_values_stored_before_file_indexes_decode_but_their_frames_are_refused(
    store: LocalArtifactStore,
) -> None:
    ref = _store_dataset(store).ref
    legacy = json.loads(encode_value(ref))
    del legacy["value"]["file_index"]
    old: DatasetRef = decode_value(json.dumps(legacy).encode())
    assert old.file_index is None and old.manifests == ref.manifests
    with pytest.raises(
        ArtifactIntegrityError, match=r"dataset sim-tiny-.*no file index.*re-materialize golden_dataset"
    ):
        load_frames(store, old, FRAMES)
    with pytest.raises(ArtifactNotFoundError, match=r"images/elsewhere\.png: not in the file index"):
        DatasetFiles.of(store, ref).read("images/elsewhere.png")

    # A dataset stored without an index (before indexes, or cut off midway) is stored again.
    assert ref.file_index is not None
    store.delete(ref.file_index.key)
    again = _store_dataset(store)
    assert not again.reused and again.ref.file_index == ref.file_index
