"""The golden data in the artifact store: the simulated dataset, its slices, the INT8 calibration
shard and the replay logs, each described by the ref the intake assets hand downstream."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adas.datasets.config import DatagenConfig, dataset_tag
from adas.datasets.generator import generate_dataset
from adas.datasets.slices import load_slices
from adas.intake.calibration import balanced_shard
from adas.intake.refs import CalibrationShardRef, DatasetRef, ReplayBundleRef, SliceCatalogRef
from adas.intake.stored import (
    FILE_INDEX,
    as_stored_file,
    existing_file,
    read_file_index,
    read_json,
    write_file_index,
)
from adas.storage import ArtifactStore

MANIFESTS = (
    "dataset.json",
    "golden_train.json",
    "golden_val.json",
    "golden_test.json",
    "replay_sequences.json",
)
SPLITS = ("golden_train", "golden_val", "golden_test")
# A slice thinner than this on the test split gives AP estimates too noisy to gate on.
MIN_TEST_IMAGES_PER_SLICE = 30


def dataset_prefix(tag: str) -> str:
    return f"datasets/{tag}"


@dataclass(frozen=True)
class GoldenDataset:
    ref: DatasetRef
    reused: bool
    generation_seconds: float


def store_golden_dataset(
    store: ArtifactStore,
    datagen: DatagenConfig,
    size: str,
    workers: int,
    log: Callable[[str], None] = print,
) -> GoldenDataset:
    """Generate the dataset of ``size`` into the store, or reuse it when its tag is already there
    (the tag hashes the generator config, so an identical dataset is never rewritten).

    The file index (every file with the sha256 recorded as it was stored) is written last: it
    marks the dataset complete, and the returned ref pins it, so every later read of a frame or a
    manifest is checked against it. A tag without an index (stored before indexes existed, or
    interrupted midway) is generated and stored again."""
    tag = dataset_tag(datagen, size)
    prefix = dataset_prefix(tag)
    index_key = f"{prefix}/{FILE_INDEX}"
    reused = store.exists(index_key)
    seconds = 0.0
    if reused:
        log(f"dataset {tag} already in the store; reusing it")
        index = existing_file(store, index_key)
    else:
        with tempfile.TemporaryDirectory(prefix=f"{tag}-") as tmp:
            summary = generate_dataset(Path(tmp), datagen, size=size, workers=workers, progress=log)
            seconds = summary.seconds
            log(f"storing {tag} under {store.uri(prefix)}")
            index = write_file_index(store, prefix, store.put_tree(prefix, Path(tmp)))
    files = read_file_index(store, index)
    manifests = {name.removesuffix(".json"): files[name] for name in MANIFESTS}
    meta = read_json(store, manifests["dataset"])
    ref = DatasetRef(
        tag=tag,
        prefix=prefix,
        size=size,
        config_hash=meta["config_hash"],
        frame_size=list(meta["frame_size"]),
        counts=dict(meta["counts"]),
        manifests=manifests,
        file_count=len(store.list_keys(prefix + "/")),
        file_index=index,
    )
    return GoldenDataset(ref, reused, seconds)


@dataclass(frozen=True)
class SliceCounts:
    ref: SliceCatalogRef
    rows: list[dict[str, Any]]
    thin_test_slices: list[str]


def slice_counts(
    store: ArtifactStore, dataset: DatasetRef, slices_file: Path, slices_sha256: str
) -> SliceCounts:
    """The slice catalog snapshotted into the store and counted on every golden split."""
    catalog = load_slices(slices_file)
    stored = store.put_file(f"config-snapshots/slices/{slices_sha256[:16]}.yaml", slices_file)
    counts = {split: catalog.counts(read_json(store, dataset.manifests[split])) for split in SPLITS}
    rows = [
        {"slice": s.name, "critical": s.critical, **{split: counts[split][s.name] for split in SPLITS}}
        for s in catalog.slices
    ]
    ref = SliceCatalogRef(
        dataset_tag=dataset.tag,
        slices_file=as_stored_file(stored),
        critical=catalog.critical,
        counts=counts,
    )
    thin = [r["slice"] for r in rows if r["golden_test"] < MIN_TEST_IMAGES_PER_SLICE]
    return SliceCounts(ref, rows, thin)


def draw_calibration_shard(
    store: ArtifactStore,
    dataset: DatasetRef,
    slices_file: Path,
    split: str,
    size: int,
    strata: Sequence[str],
    seed: int,
) -> CalibrationShardRef:
    """``size`` frames of ``split`` drawn round-robin over the ``strata`` slices, stored as JSON."""
    coco = read_json(store, dataset.manifests[split])
    ids, per_stratum = balanced_shard(coco, load_slices(slices_file), size, list(strata), seed)
    by_id = {img["id"]: img for img in coco["images"]}
    body = {
        "dataset_tag": dataset.tag,
        "split": split,
        "image_ids": ids,
        "file_names": [by_id[i]["file_name"] for i in ids],
        "per_stratum": per_stratum,
    }
    key = f"{dataset.prefix}/calibration/{split}-{size}-s{seed}.json"
    stored = store.put_bytes(key, json.dumps(body, indent=2).encode())
    return CalibrationShardRef(
        dataset_tag=dataset.tag,
        split=split,
        shard=as_stored_file(stored),
        image_ids=ids,
        per_stratum=per_stratum,
    )


@dataclass(frozen=True)
class ReplayLogs:
    ref: ReplayBundleRef
    annotated_boxes: int


def replay_logs(store: ArtifactStore, dataset: DatasetRef) -> ReplayLogs:
    """The recorded drive sequences of the dataset (frames and ground truth with track ids)."""
    manifest = dataset.manifests["replay_sequences"]
    replay = read_json(store, manifest)
    sequences: list[dict[str, str | int | float]] = [
        {
            "sequence_id": s["sequence_id"],
            "scenario": s["scenario"],
            "weather": s["weather"],
            "lighting": s["lighting"],
            "frames": len(s["image_ids"]),
            "fps": float(s["fps"]),
        }
        for s in replay["sequences"]
    ]
    ref = ReplayBundleRef(
        dataset_tag=dataset.tag, manifest=manifest, sequences=sequences, file_index=dataset.file_index
    )
    return ReplayLogs(ref, len(replay["annotations"]))
