"""COCO manifests -> CenterNet training targets.

A manifest (``golden_train.json`` ...) is a COCO dict whose images carry ``file_name``
relative to the dataset directory. ``CocoFrames`` loads the frames once into one uint8
array (the demo splits are a few hundred MB at most, and decoding PNGs every epoch would
cost as much as the model on 2 cores); ``CenterNetDataset`` turns them into normalized
tensors and dense target maps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from adas.detector.model import INPUT_SHAPE, STRIDE
from adas.intake.contract import Normalization

# TTFNet-style elliptical gaussians: sigma = alpha * side / 6, floored so that tiny objects
# (a motorcycle is ~1-2 output cells) still give their neighbours a reduced focal penalty.
_GAUSS_ALPHA = 0.54
_MIN_SIGMA = 0.5


def load_manifest(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


@dataclass
class CocoFrames:
    """Frames of one manifest as uint8 [N, H, W, 3] RGB, in ``coco['images']`` order."""

    coco: dict[str, Any]
    frames: np.ndarray
    image_ids: list[int]

    @classmethod
    def load(
        cls, manifest: str | Path, root: str | Path | None = None, limit: int | None = None
    ) -> CocoFrames:
        """Read a manifest and its frames; ``root`` defaults to the manifest's directory.

        Frames whose size differs from the model input are resized (bilinear) and their
        boxes scaled, so every box in ``coco`` is in model-input pixels.
        """
        manifest = Path(manifest)
        root = Path(root) if root is not None else manifest.parent
        coco = load_manifest(manifest)
        images = coco["images"][:limit] if limit else coco["images"]
        _, h, w = INPUT_SHAPE
        frames = np.empty((len(images), h, w, 3), np.uint8)
        scale: dict[int, tuple[float, float]] = {}
        for i, im in enumerate(images):
            with Image.open(root / im["file_name"]) as pil:
                pil = pil.convert("RGB")
                sx, sy = w / pil.width, h / pil.height
                if (pil.width, pil.height) != (w, h):
                    pil = pil.resize((w, h), Image.BILINEAR)
                frames[i] = np.asarray(pil)
            scale[int(im["id"])] = (sx, sy)
        ids = [int(im["id"]) for im in images]
        keep = set(ids)
        anns = []
        for a in coco.get("annotations", []):
            if int(a["image_id"]) not in keep:
                continue
            sx, sy = scale[int(a["image_id"])]
            if (sx, sy) != (1.0, 1.0):
                x, y, bw, bh = a["bbox"]
                a = {**a, "bbox": [x * sx, y * sy, bw * sx, bh * sy], "area": bw * sx * bh * sy}
            anns.append(a)
        sub = {**coco, "images": list(images), "annotations": anns}
        if any(s != (1.0, 1.0) for s in scale.values()):
            sub["images"] = [{**im, "width": w, "height": h} for im in images]
        return cls(coco=sub, frames=frames, image_ids=ids)

    def boxes_by_image(self) -> dict[int, list[tuple[float, float, float, float, int]]]:
        """image id -> [(x, y, w, h, category_id)] (crowd boxes excluded)."""
        out: dict[int, list[tuple[float, float, float, float, int]]] = {i: [] for i in self.image_ids}
        for a in self.coco.get("annotations", []):
            if a.get("iscrowd", 0):
                continue
            x, y, w, h = (float(v) for v in a["bbox"])
            out[int(a["image_id"])].append((x, y, w, h, int(a["category_id"])))
        return out


def estimate_normalization(frames: np.ndarray, max_frames: int = 512, seed: int = 0) -> Normalization:
    """Per-channel mean/std of (a sample of) the training frames, on the [0, 1] scale."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(frames), size=min(max_frames, len(frames)), replace=False)
    x = frames[np.sort(idx)].reshape(-1, 3).astype(np.float64) / 255.0
    mean = tuple(round(float(v), 4) for v in x.mean(0))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(0))
    return Normalization(scale=1 / 255, mean=mean, std=std)  # type: ignore[arg-type]


def draw_gaussian(heat: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> None:
    """Max-combine an elliptical gaussian centred on the integer cell of (cx, cy) into ``heat``."""
    h, w = heat.shape
    ix, iy = int(cx), int(cy)
    rx, ry = max(1, int(3 * sx)), max(1, int(3 * sy))
    x0, x1 = max(0, ix - rx), min(w, ix + rx + 1)
    y0, y1 = max(0, iy - ry), min(h, iy + ry + 1)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32) - ix
    ys = np.arange(y0, y1, dtype=np.float32) - iy
    g = np.exp(-(xs[None, :] ** 2) / (2 * sx * sx) - (ys[:, None] ** 2) / (2 * sy * sy))
    np.maximum(heat[y0:y1, x0:x1], g, out=heat[y0:y1, x0:x1])


def make_targets(
    boxes: list[tuple[float, float, float, float, int]], class_ids: list[int], out_hw: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Dense CenterNet targets for boxes (x, y, w, h, category) in input pixels:
    ``heatmap`` [C, h, w], ``box_size`` [2, h, w] (pixels), ``offset`` [2, h, w] (cells),
    ``mask`` [h, w] (1 at object centres)."""
    oh, ow = out_hw
    heat = np.zeros((len(class_ids), oh, ow), np.float32)
    size = np.zeros((2, oh, ow), np.float32)
    offset = np.zeros((2, oh, ow), np.float32)
    mask = np.zeros((oh, ow), np.float32)
    channel = {c: k for k, c in enumerate(class_ids)}
    # Largest first, so that where two centres share a cell the smaller object's regression
    # target wins (small objects are the scarce, hard ones).
    for x, y, bw, bh, cat in sorted(boxes, key=lambda b: -b[2] * b[3]):
        if cat not in channel or bw <= 0 or bh <= 0:
            continue
        cx, cy = (x + bw / 2) / STRIDE, (y + bh / 2) / STRIDE
        if not (0 <= cx < ow and 0 <= cy < oh):
            continue
        ix, iy = int(cx), int(cy)
        sx = max(_GAUSS_ALPHA * bw / STRIDE / 6, _MIN_SIGMA)
        sy = max(_GAUSS_ALPHA * bh / STRIDE / 6, _MIN_SIGMA)
        draw_gaussian(heat[channel[cat]], cx, cy, sx, sy)
        size[:, iy, ix] = (bw, bh)
        offset[:, iy, ix] = (cx - ix, cy - iy)
        mask[iy, ix] = 1.0
    return {"heatmap": heat, "box_size": size, "offset": offset, "mask": mask}


class CenterNetDataset(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """(normalized image [3, H, W], targets) pairs with optional light augmentation.

    Augmentation (``augment=True``): horizontal flip (p=0.5) and brightness/contrast jitter;
    weather, noise and glare are already in the data, so nothing heavier is added.
    """

    def __init__(
        self,
        frames: CocoFrames,
        class_ids: list[int],
        normalization: Normalization,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.frames = frames
        self.class_ids = list(class_ids)
        self.boxes = frames.boxes_by_image()
        self.augment = augment
        self.rng = np.random.default_rng(seed)
        self.mean = np.asarray(normalization.mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(normalization.std, np.float32).reshape(3, 1, 1)
        self.scale = np.float32(normalization.scale)
        _, h, w = INPUT_SHAPE
        self.out_hw = (h // STRIDE, w // STRIDE)

    def __len__(self) -> int:
        return len(self.frames.image_ids)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        img = self.frames.frames[i].astype(np.float32)
        boxes = list(self.boxes[self.frames.image_ids[i]])
        if self.augment:
            if self.rng.random() < 0.5:
                img = img[:, ::-1]
                width = img.shape[1]
                boxes = [(width - x - bw, y, bw, bh, c) for x, y, bw, bh, c in boxes]
            contrast = self.rng.uniform(0.75, 1.25)
            brightness = self.rng.uniform(-20.0, 20.0)
            m = img.mean()
            img = np.clip((img - m) * contrast + m + brightness, 0.0, 255.0)
        x = (img.transpose(2, 0, 1) * self.scale - self.mean) / self.std
        t = make_targets(boxes, self.class_ids, self.out_hw)
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), {
            k: torch.from_numpy(v) for k, v in t.items()
        }
