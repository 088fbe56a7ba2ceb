"""Small synthetic datasets and prediction sets for the evaluation tests (no simulator needed).

Frames are a grey road with vehicle-sized rectangles, run through the dataset's own weather
transforms, with the manifest fields the generator writes (scene ids, tags, timestamps), so
slices from ``config/slices.yaml`` select them like real frames.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from adas.datasets.coco import CATEGORIES
from adas.datasets.weather import apply_weather
from adas.detector.postprocess import Detections

H, W = 96, 384
SIZES = {1: (16.0, 7.0), 2: (30.0, 9.0), 3: (8.0, 4.0)}
# (weather, lighting) cycled per scene: every critical slice gets frames.
CONDITIONS = [
    ("clear", "day"),
    ("fog", "day"),
    ("clear", "night"),
    ("rain", "day"),
    ("snow", "day"),
    ("clear", "glare"),
]
SCENARIOS = ["highway", "merge", "intersection", "roundabout"]


def _frame(
    rng: np.random.Generator, boxes: list[tuple[int, list[float]]], weather: str, lighting: str
) -> np.ndarray:
    img = np.full((H, W, 3), 100, np.uint8)
    img[H // 2 - 1 : H // 2 + 1, ::12] = 220
    palette = np.array([[220, 60, 50], [40, 90, 170], [240, 240, 240], [30, 120, 60]], np.uint8)
    for _, (x, y, w, h) in boxes:
        img[int(y) : int(y + h), int(x) : int(x + w)] = palette[int(rng.integers(0, len(palette)))]
    return apply_weather(img, weather, lighting, rng, severity=3)


def make_split(
    split: str,
    n_scenes: int,
    frames_per_scene: int,
    first_image_id: int,
    seed: int,
    scene_prefix: str = "",
    frame_interval_s: float = 1.0,
    conditions: list[tuple[str, str]] | None = None,
    with_frames: bool = True,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    images, anns, frames = [], [], []
    conds = conditions or CONDITIONS
    image_id = first_image_id
    for s in range(n_scenes):
        weather, lighting = conds[s % len(conds)]
        scenario = SCENARIOS[s % len(SCENARIOS)] if split in ("golden_test", "replay") else SCENARIOS[s % 3]
        density = "dense" if s % 2 else "sparse"
        scene_id = f"{scene_prefix}{scenario}-s{seed:02d}{s:03d}"
        # Vehicles move right at a constant speed: consecutive frames are trackable.
        vehicles = []
        for t in range(int(rng.integers(2, 6))):
            c = int(rng.choice([1, 1, 2, 3]))
            w, h = SIZES[c]
            vehicles.append(
                (
                    t + 1,
                    c,
                    float(rng.uniform(10, 200)),
                    float(rng.uniform(8, H - 8 - h)),
                    w,
                    h,
                    float(rng.uniform(10, 30)),
                )
            )
        for f in range(frames_per_scene):
            ts = f * frame_interval_s
            boxes = []
            for track, c, x0, y, w, h, vx in vehicles:
                x = min(x0 + vx * ts, W - w - 1)
                boxes.append((c, [x, y, w, h]))
                anns.append(
                    {
                        "id": len(anns) + 1 + first_image_id * 10,
                        "image_id": image_id,
                        "category_id": c,
                        "bbox": [round(x, 2), round(y, 2), w, h],
                        "area": w * h,
                        "iscrowd": 0,
                        "track_id": track,
                    }
                )
            if with_frames:
                frames.append(_frame(rng, boxes, weather, lighting))
            images.append(
                {
                    "id": image_id,
                    "file_name": f"images/{split}/{scene_id}_f{f:04d}.png",
                    "width": W,
                    "height": H,
                    "scene_id": scene_id,
                    "frame_index": f,
                    "timestamp_s": ts,
                    "scenario": scenario,
                    "density": density,
                    "weather": weather,
                    "lighting": lighting,
                    "split": split,
                    "severity": 0 if split == "replay" else 3,
                }
            )
            image_id += 1
    coco = {
        "info": {"split": split},
        "images": images,
        "annotations": anns,
        "categories": [dict(c) for c in CATEGORIES],
    }
    return coco, frames


def make_dataset(
    out: Path, seed: int = 0, test_scenes: int = 12, leak_scene: bool = False
) -> dict[str, dict[str, Any]]:
    """Write a dataset directory (frames + manifests) like the generator's; returns the manifests."""
    out = Path(out)
    manifests: dict[str, dict[str, Any]] = {}
    all_frames: dict[str, list[np.ndarray]] = {}
    specs = {
        "golden_train": (3, 2, 1000),
        "golden_val": (2, 2, 2000),
        "golden_test": (test_scenes, 4, 3000),
    }
    for k, (split, (n, fps, first)) in enumerate(specs.items()):
        manifests[split], all_frames[split] = make_split(
            split, n, fps, first, seed + k, scene_prefix=f"{split[7:]}-"
        )
    replay, rframes = make_split(
        "replay",
        2,
        8,
        5000,
        seed + 7,
        scene_prefix="replay-",
        frame_interval_s=0.2,
        conditions=[("clear", "day"), ("fog", "day")],
    )
    replay["sequences"] = [
        {
            "sequence_id": f"seq{i:02d}",
            "scene_id": sid,
            "image_ids": [im["id"] for im in replay["images"] if im["scene_id"] == sid],
            "fps": 5.0,
            "scenario": next(im["scenario"] for im in replay["images"] if im["scene_id"] == sid),
            "weather": next(im["weather"] for im in replay["images"] if im["scene_id"] == sid),
            "lighting": next(im["lighting"] for im in replay["images"] if im["scene_id"] == sid),
        }
        for i, sid in enumerate(dict.fromkeys(im["scene_id"] for im in replay["images"]))
    ]
    manifests["replay_sequences"] = replay
    all_frames["replay_sequences"] = rframes
    if leak_scene:
        # A test scene's frames also shipped in train: the leakage guard must name it.
        leaked = manifests["golden_test"]["images"][0]
        manifests["golden_train"]["images"].append(
            {**leaked, "id": 1999, "split": "golden_train", "file_name": "images/golden_train/leaked.png"}
        )
        all_frames["golden_train"].append(all_frames["golden_test"][0])
    for split, coco in manifests.items():
        for im, frame in zip(coco["images"], all_frames[split], strict=True):
            p = out / im["file_name"]
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(frame).save(p)
        (out / f"{split}.json").write_text(json.dumps(coco))
    counts = {s: len(m["images"]) for s, m in manifests.items() if s != "replay_sequences"}
    (out / "dataset.json").write_text(
        json.dumps({"tag": "sim-synthetic", "config_hash": "0" * 64, "frame_size": [H, W], "counts": counts})
    )
    return manifests


def png_bytes(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- constructed predictions


def predictions_from_gt(
    coco: dict[str, Any],
    *,
    seed: int,
    recall: float,
    jitter: float = 0.5,
    fp_per_image: float = 0.3,
    blind_ids: set[int] | None = None,
    recall_by_image: dict[int, float] | None = None,
    score_range: tuple[float, float] = (0.55, 0.95),
) -> dict[int, Detections]:
    """Detections made from the ground truth: each box found with probability ``recall`` (per
    image override possible), jittered, scored high; plus low-score false positives. Images in
    ``blind_ids`` get nothing (a model blind in those conditions)."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict[str, Any]]] = {int(im["id"]): [] for im in coco["images"]}
    for a in coco["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    out = {}
    for i, anns in by_image.items():
        if blind_ids and i in blind_ids:
            out[i] = Detections.empty()
            continue
        r = (recall_by_image or {}).get(i, recall)
        boxes, scores, cats = [], [], []
        for a in anns:
            if rng.random() > r:
                continue
            x, y, w, h = a["bbox"]
            dx, dy = rng.normal(0, jitter, 2)
            boxes.append([x + dx, y + dy, x + dx + w, y + dy + h])
            scores.append(rng.uniform(*score_range))
            cats.append(a["category_id"])
        for _ in range(rng.poisson(fp_per_image)):
            x, y = rng.uniform(0, W - 20), rng.uniform(0, H - 10)
            boxes.append([x, y, x + 14, y + 6])
            scores.append(rng.uniform(0.05, 0.4))
            cats.append(int(rng.integers(1, 4)))
        order = np.argsort(-np.asarray(scores, np.float32), kind="stable") if scores else np.zeros(0, int)
        out[i] = Detections(
            np.asarray(boxes, np.float32).reshape(-1, 4)[order],
            np.asarray(scores, np.float32)[order],
            np.asarray(cats, np.int64)[order],
        )
    return out
