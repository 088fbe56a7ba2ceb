"""Simulated demo data: highway-env frames with ground-truth boxes, COCO manifests and slices.

Importing this package is cheap: the simulator (pygame, highway-env) loads only when a scene runs.
"""

from adas.datasets.coco import (
    CATEGORIES,
    GOLDEN_SPLITS,
    REPLAY_SPLIT,
    image_tags,
    load_coco,
    write_coco,
)
from adas.datasets.config import DatagenConfig, load_datagen_config
from adas.datasets.generator import DatasetSummary, generate_dataset
from adas.datasets.slices import SliceCatalog, load_slices
from adas.datasets.weather import apply_weather

__all__ = [
    "CATEGORIES",
    "GOLDEN_SPLITS",
    "REPLAY_SPLIT",
    "DatagenConfig",
    "DatasetSummary",
    "SliceCatalog",
    "apply_weather",
    "generate_dataset",
    "image_tags",
    "load_coco",
    "load_datagen_config",
    "load_slices",
    "write_coco",
]
