"""COCO manifests of the simulated demo dataset: constants, typed views, atomic read/write.

The layout of a generated dataset directory::

    <out>/dataset.json            metadata: tag, seed, config hash, frame size, counts
    <out>/golden_{train,val,test}.json
    <out>/replay_sequences.json   COCO dict + "sequences"
    <out>/images/<split>/<scene_id>_f<frame:04d>.png
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Final, NotRequired, TypedDict

CATEGORIES: Final[list[dict[str, Any]]] = [
    {"id": 1, "name": "car"},
    {"id": 2, "name": "truck"},
    {"id": 3, "name": "motorcycle"},
]
CATEGORY_IDS: Final[dict[str, int]] = {c["name"]: c["id"] for c in CATEGORIES}

GOLDEN_SPLITS: Final[tuple[str, ...]] = ("golden_train", "golden_val", "golden_test")
REPLAY_SPLIT: Final[str] = "replay"
ALL_SPLITS: Final[tuple[str, ...]] = (*GOLDEN_SPLITS, REPLAY_SPLIT)
DATASET_META_FILE: Final[str] = "dataset.json"
REPLAY_FILE: Final[str] = "replay_sequences.json"

# Vocabulary of the per-image tags that slices select on.
SCENARIOS: Final[tuple[str, ...]] = ("highway", "merge", "intersection", "roundabout")
DENSITIES: Final[tuple[str, ...]] = ("sparse", "dense")
WEATHERS: Final[tuple[str, ...]] = ("clear", "fog", "rain", "snow")
LIGHTINGS: Final[tuple[str, ...]] = ("day", "night", "glare")
TAG_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "scenario": SCENARIOS,
    "density": DENSITIES,
    "weather": WEATHERS,
    "lighting": LIGHTINGS,
}


class CocoImage(TypedDict):
    id: int
    file_name: str
    width: int
    height: int
    scene_id: str
    frame_index: int
    timestamp_s: float
    scenario: str
    density: str
    weather: str
    lighting: str
    split: str
    severity: NotRequired[int]


class CocoAnnotation(TypedDict):
    id: int
    image_id: int
    category_id: int
    bbox: list[float]
    area: float
    iscrowd: int
    track_id: int
    is_ego: NotRequired[bool]


class ReplaySequence(TypedDict):
    sequence_id: str
    scene_id: str
    image_ids: list[int]
    fps: float
    scenario: str
    weather: str
    lighting: str


class CocoDataset(TypedDict):
    info: dict[str, Any]
    images: list[CocoImage]
    annotations: list[CocoAnnotation]
    categories: list[dict[str, Any]]
    sequences: NotRequired[list[ReplaySequence]]


def split_file(out_dir: Path, split: str) -> Path:
    """Path of the manifest of ``split`` (a golden split or ``replay``) inside a dataset directory."""
    if split == REPLAY_SPLIT:
        return Path(out_dir) / REPLAY_FILE
    if split not in GOLDEN_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(ALL_SPLITS)}")
    return Path(out_dir) / f"{split}.json"


def image_file_name(split: str, scene_id: str, frame_index: int) -> str:
    """File name of a frame, relative to the dataset directory."""
    return f"images/{split}/{scene_id}_f{frame_index:04d}.png"


def load_coco(path: Path | str) -> CocoDataset:
    """Read a COCO manifest; fails with the file name when it is not a COCO dict."""
    path = Path(path)
    with path.open() as f:
        data = json.load(f)
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise ValueError(f"{path}: not a COCO manifest (missing {', '.join(missing)})")
    return data


def write_coco(path: Path | str, data: CocoDataset | dict[str, Any]) -> None:
    """Write a manifest atomically: readers never see a half-written file."""
    write_json_atomic(path, data)


def write_json_atomic(path: Path | str, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            # Compact but stable: byte-identical output for identical input (determinism tests rely on it).
            json.dump(data, f, separators=(",", ":"), ensure_ascii=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_dataset_meta(out_dir: Path | str) -> dict[str, Any]:
    with (Path(out_dir) / DATASET_META_FILE).open() as f:
        return json.load(f)


def image_tags(image: CocoImage | dict[str, Any]) -> dict[str, str]:
    """The slice-selectable tags of an image entry: scenario, density, weather, lighting."""
    return {tag: str(image[tag]) for tag in TAG_VALUES}


def annotations_by_image(data: CocoDataset | dict[str, Any]) -> dict[int, list[CocoAnnotation]]:
    """Annotations grouped by image id; every image id is present, possibly with an empty list."""
    out: dict[int, list[CocoAnnotation]] = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        out.setdefault(ann["image_id"], []).append(ann)
    return out


def images_by_id(data: CocoDataset | dict[str, Any]) -> dict[int, CocoImage]:
    return {img["id"]: img for img in data["images"]}


def images_by_scene(data: CocoDataset | dict[str, Any]) -> dict[str, list[CocoImage]]:
    """Images grouped by scene id, each list ordered by frame index."""
    out: dict[str, list[CocoImage]] = defaultdict(list)
    for img in data["images"]:
        out[img["scene_id"]].append(img)
    return {k: sorted(v, key=lambda i: i["frame_index"]) for k, v in out.items()}
