"""CenterNet decode, NMS and box IoU in pure numpy.

Shared by offline evaluation, the Triton python backend and the closed-loop simulator, so
it must not import torch (nor dagster): numpy only. The decode follows the bundle's
``Postprocess`` contract:

1. ``sigmoid`` of the heatmap logits,
2. peaks = cells equal to the 3x3 max of their neighbourhood (CenterNet's "NMS by max-pool"),
3. top ``max_detections`` peaks over all classes with score >= ``score_threshold``,
4. boxes from ``box_size`` (w, h in input pixels) and ``offset`` (sub-cell centre, in cells),
5. class-wise greedy NMS at ``nms_iou_threshold`` (neighbouring peaks of one object can
   survive step 2 when an object straddles cells), then the best ``max_detections``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # duck-typed at runtime so light consumers need not build a pydantic model
    from adas.intake.contract import Postprocess


@dataclass(frozen=True)
class Detections:
    """Detections of one image: ``boxes`` (N, 4) xyxy float32 in input pixels,
    ``scores`` (N,) float32 in [0, 1] sorted descending, ``category_ids`` (N,) int64 (COCO ids)."""

    boxes: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64))

    def scaled(self, sx: float, sy: float) -> Detections:
        """Boxes mapped to another pixel grid (e.g. from model input to original frame)."""
        factor = np.array([sx, sy, sx, sy], np.float32)
        return Detections(self.boxes * factor, self.scores, self.category_ids)

    def to_coco(self, image_id: int) -> list[dict[str, Any]]:
        """COCO result records (``bbox`` as [x, y, w, h])."""
        out = []
        for box, score, cat in zip(
            self.boxes.tolist(), self.scores.tolist(), self.category_ids.tolist(), strict=True
        ):
            x0, y0, x1, y1 = box
            out.append(
                {
                    "image_id": int(image_id),
                    "category_id": int(cat),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": score,
                }
            )
        return out


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes: (N, 4) x (M, 4) -> (N, M) float64; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def _self_iou(boxes: np.ndarray) -> np.ndarray:
    """``box_iou(boxes, boxes)`` with one coordinate vector per side: the same float64 numbers,
    without the (N, N, 2) intermediates (NMS's hot spot on a dense head's candidates)."""
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    w = np.clip(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0, None)
    h = np.clip(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0, None)
    inter = w * h
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


# Up to this many candidates NMS precomputes their IoU matrix (2,048^2 float64 = 32 MB at most).
_NMS_MATRIX_MAX = 2048


def nms(
    boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int | None = None
) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, by descending score.

    A box is dropped when its IoU with a kept, higher-scoring box is > ``iou_threshold``
    (strictly greater, as torchvision does); ties in score keep the lower index first.
    ``max_keep`` stops after that many kept boxes: greedy NMS decides boxes in score order, so
    the first ``max_keep`` are exactly those of the full run (a dense head's thousand candidates
    then cost a hundred steps, not a thousand).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = np.argsort(-scores, kind="stable")
    limit = order.size if max_keep is None else min(max_keep, order.size)
    if order.size <= _NMS_MATRIX_MAX:
        # One IoU matrix in score order, then a pass over its rows: the loop touches booleans only.
        overlaps = _self_iou(boxes[order]) > iou_threshold
        suppressed = np.zeros(order.size, bool)
        kept: list[int] = []
        for i in range(order.size):
            if suppressed[i]:
                continue
            kept.append(i)
            if len(kept) >= limit:
                break
            suppressed |= overlaps[i]
        return order[np.asarray(kept, dtype=np.int64)]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        if order.size == 1 or len(keep) >= limit:
            break
        ious = box_iou(boxes[i : i + 1], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    iou_threshold: float,
    max_keep: int | None = None,
) -> np.ndarray:
    """Class-wise NMS: boxes of different classes never suppress each other. With ``max_keep``
    each class stops at that many (the best ``max_keep`` overall are among them)."""
    keep = [
        np.flatnonzero(classes == c)[nms(boxes[classes == c], scores[classes == c], iou_threshold, max_keep)]
        for c in np.unique(classes)
    ]
    if not keep:
        return np.zeros((0,), np.int64)
    merged = np.concatenate(keep)
    return merged[np.argsort(-scores[merged], kind="stable")]


def sigmoid(x: np.ndarray) -> np.ndarray:
    # Clipping keeps exp() finite for extreme logits without changing any float32 result.
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def max_pool3x3(x: np.ndarray) -> np.ndarray:
    """3x3 max over the last two axes, stride 1, same size (pads with -inf)."""
    h, w = x.shape[-2:]
    pad = [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)]
    p = np.pad(x, pad, constant_values=-np.inf)
    out = p[..., 0:h, 0:w].copy()
    for dy in range(3):
        for dx in range(3):
            np.maximum(out, p[..., dy : dy + h, dx : dx + w], out=out)
    return out


def _batched(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a[None] if a.ndim == 3 else a


def with_score_threshold(postprocess: Postprocess, score_threshold: float | None) -> Postprocess:
    """``postprocess`` with ``score_threshold`` in place of the contract's operating threshold
    (None keeps it): evaluation and mAP keep the low-score tail that the operating threshold cuts."""
    if score_threshold is None:
        return postprocess
    return postprocess.model_copy(update={"score_threshold": score_threshold})


def decode(
    outputs: Mapping[str, np.ndarray], postprocess: Postprocess, class_ids: Sequence[int]
) -> list[Detections]:
    """Raw head outputs (batched [B, C, H, W] or one image [C, H, W]) -> one ``Detections`` per image.

    ``class_ids[k]`` is the COCO category of heatmap channel ``k`` (the contract's ``classes``
    in order). Boxes are in model-input pixels, clipped to the input frame.
    """
    heat_logits = _batched(outputs[postprocess.heatmap_output]).astype(np.float32, copy=False)
    sizes = _batched(outputs[postprocess.size_output]).astype(np.float32, copy=False)
    offsets = _batched(outputs[postprocess.offset_output]).astype(np.float32, copy=False)
    b, c, h, w = heat_logits.shape
    if len(class_ids) != c:
        raise ValueError(f"heatmap has {c} channels but {len(class_ids)} class ids were given")
    if sizes.shape != (b, 2, h, w) or offsets.shape != (b, 2, h, w):
        raise ValueError(
            f"size {sizes.shape} / offset {offsets.shape} do not match heatmap {heat_logits.shape}"
        )
    stride = float(postprocess.stride)
    ids = np.asarray(class_ids, dtype=np.int64)
    heat = sigmoid(heat_logits)
    peaks = np.where(heat == max_pool3x3(heat), heat, 0.0)
    k = int(postprocess.max_detections)
    results: list[Detections] = []
    for i in range(b):
        flat = peaks[i].reshape(-1)
        cand = np.flatnonzero(flat >= max(postprocess.score_threshold, 1e-12))
        if cand.size > k:
            cand = cand[np.argpartition(-flat[cand], k - 1)[:k]]
        if cand.size == 0:
            results.append(Detections.empty())
            continue
        cls, ys, xs = np.unravel_index(cand, (c, h, w))
        scores = flat[cand].astype(np.float32)
        cx = (xs + offsets[i, 0, ys, xs]) * stride
        cy = (ys + offsets[i, 1, ys, xs]) * stride
        bw = np.clip(sizes[i, 0, ys, xs], 0.0, None)
        bh = np.clip(sizes[i, 1, ys, xs], 0.0, None)
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        boxes = np.clip(boxes, 0.0, [w * stride, h * stride, w * stride, h * stride]).astype(np.float32)
        keep = batched_nms(boxes, scores, cls, postprocess.nms_iou_threshold, max_keep=k)[:k]
        results.append(Detections(boxes[keep], scores[keep], ids[cls[keep]]))
    return results
