"""Recorded requests for a rollout to replay: frames of the golden dataset's replay sequences.

The ``production_alias`` asset and ``adas-registry promote`` both load the canary's traffic here.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from adas.intake.refs import DatasetRef
from adas.intake.stored import read_json
from adas.packaging.build import load_frames
from adas.storage import ArtifactStore

FRAME_TAGS = ("scenario", "weather", "lighting", "density", "scene_id")


@dataclass
class Traffic:
    """Recorded requests to replay: uint8 frames [N, H, W, 3] and per-frame tags."""

    frames: np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)


def replay_traffic(store: ArtifactStore, dataset: DatasetRef, max_frames: int) -> Traffic:
    """Up to ``max_frames`` frames of ``dataset``'s replay sequences, in sequence order, with
    their scenario tags (the frames of the dataset when it records no sequences)."""
    replay = read_json(store, dataset.manifests["replay_sequences"])
    images = {img["id"]: img for img in replay["images"]}
    ordered = [images[i] for s in replay["sequences"] for i in s["image_ids"] if i in images]
    ordered = (ordered or list(images.values()))[:max_frames]
    frames = load_frames(store, dataset, [img["file_name"] for img in ordered])
    meta = [{k: img[k] for k in FRAME_TAGS if k in img} for img in ordered]
    return Traffic(frames, meta)
