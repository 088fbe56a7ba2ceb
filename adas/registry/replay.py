"""Recorded requests for a rollout to replay: frames of the golden dataset's replay sequences.

The ``production_alias`` asset and ``adas-registry promote`` both load the canary's traffic here:
the asset from the golden dataset it was handed (pinned to its materialization), the CLI from the
dataset the promoted entry was evaluated on (pinned through the entry).
"""

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adas.intake.refs import StoredFile
from adas.intake.stored import DatasetFiles, read_json
from adas.registry.models import Entry, RegistryError
from adas.storage import ArtifactStore

FRAME_TAGS = ("scenario", "weather", "lighting", "density", "scene_id")
REPLAY_MANIFEST = "replay_sequences.json"
EVAL_REPORT = "evaluation/eval_report.json"


@dataclass
class Traffic:
    """Recorded requests to replay: uint8 frames [N, H, W, 3] and per-frame tags."""

    frames: np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)


def replay_traffic(files: DatasetFiles, max_frames: int) -> Traffic:
    """Up to ``max_frames`` frames of the dataset's replay sequences, in sequence order, with
    their scenario tags (the frames of the dataset when it records no sequences); the manifest
    and every frame read against the dataset's file index."""
    replay = json.loads(files.read(REPLAY_MANIFEST))
    images = {img["id"]: img for img in replay["images"]}
    ordered = [images[i] for s in replay["sequences"] for i in s["image_ids"] if i in images]
    ordered = (ordered or list(images.values()))[:max_frames]
    frames = files.rgb_frames([img["file_name"] for img in ordered])
    meta = [{k: img[k] for k in FRAME_TAGS if k in img} for img in ordered]
    return Traffic(frames, meta)


def evaluated_dataset(store: ArtifactStore, entry: Entry) -> DatasetFiles:
    """The golden dataset ``entry`` was evaluated on, pinned through the registry entry alone:
    the entry pins its ``eval_report.json``, which pins the dataset's file index (for callers
    without the pipeline's records, such as ``adas-registry promote``)."""
    pointer = entry.body.reports.get(EVAL_REPORT)
    if pointer is None:
        raise RegistryError(f"{entry.ref}: the entry pins no {EVAL_REPORT}, so no dataset to replay")
    dataset = read_json(store, pointer).get("dataset") or {}
    if not dataset.get("file_index"):
        raise RegistryError(
            f"{entry.ref}: its {EVAL_REPORT} ({pointer.uri}) records no dataset file index (it was "
            "evaluated before reads were pinned); re-evaluate it to replay its dataset"
        )
    return DatasetFiles(store, StoredFile.model_validate(dataset["file_index"]), str(dataset.get("tag", "?")))
