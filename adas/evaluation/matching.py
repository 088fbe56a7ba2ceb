"""Greedy detection-to-ground-truth matching at one IoU threshold (numpy).

COCOeval does its own matching for AP; this one serves the per-detection studies that need a
TP/FP label for every detection (calibration, thresholds) or a class-agnostic pairing
(confusion matrix). Detections are matched in descending score order, each to the unmatched
ground-truth box of highest IoU at or above the threshold (COCO's rule).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adas.detector.postprocess import box_iou


def gt_by_image(
    gt: Mapping[str, Any], image_ids: Iterable[int] | None = None
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """image id -> (boxes xyxy (M, 4), category ids (M,)), crowd boxes left out."""
    keep = None if image_ids is None else {int(i) for i in image_ids}
    ids = [int(im["id"]) for im in gt["images"] if keep is None or int(im["id"]) in keep]
    boxes: dict[int, list[list[float]]] = {i: [] for i in ids}
    cats: dict[int, list[int]] = {i: [] for i in ids}
    for a in gt["annotations"]:
        i = int(a["image_id"])
        if i not in boxes or a.get("iscrowd", 0):
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        boxes[i].append([x, y, x + w, y + h])
        cats[i].append(int(a["category_id"]))
    return {i: (np.asarray(boxes[i], np.float64).reshape(-1, 4), np.asarray(cats[i], np.int64)) for i in ids}


def dets_by_image(
    records: Iterable[Mapping[str, Any]],
) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """COCO result records -> image id -> (boxes xyxy, scores, category ids), by descending score."""
    grouped: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        grouped.setdefault(int(r["image_id"]), []).append(r)
    out = {}
    for i, rs in grouped.items():
        rs = sorted(rs, key=lambda r: -float(r["score"]))
        b = np.asarray(
            [
                [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                for r in rs
            ],
            np.float64,
        )
        out[i] = (
            b.reshape(-1, 4),
            np.asarray([float(r["score"]) for r in rs], np.float64),
            np.asarray([int(r["category_id"]) for r in rs], np.int64),
        )
    return out


def _greedy(iou: np.ndarray, allowed: np.ndarray, threshold: float) -> np.ndarray:
    """For detections in row order: index of the matched ground truth, or -1."""
    n, m = iou.shape
    match = np.full(n, -1, np.int64)
    if n == 0 or m == 0:
        return match
    taken = np.zeros(m, bool)
    cand = np.where(allowed & (iou >= threshold), iou, -1.0)
    for k in range(n):
        row = np.where(taken, -1.0, cand[k])
        j = int(np.argmax(row))
        if row[j] >= threshold:
            match[k] = j
            taken[j] = True
    return match


@dataclass(frozen=True)
class MatchedDetections:
    """One row per detection (all images concatenated) plus ground-truth counts."""

    image_ids: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray
    tp: np.ndarray  # bool: matched a same-class ground-truth box
    width: np.ndarray  # box width / frame width
    height: np.ndarray  # box height / frame height
    gt_per_class: dict[int, int]

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def match_same_class(
    gt: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    image_ids: Sequence[int],
    iou_threshold: float = 0.5,
) -> MatchedDetections:
    """TP/FP label of every detection on ``image_ids`` (same-class greedy matching)."""
    gts = gt_by_image(gt, image_ids)
    dets = dets_by_image(records)
    sizes = {int(im["id"]): (float(im.get("width", 1)), float(im.get("height", 1))) for im in gt["images"]}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("img", "score", "cat", "tp", "w", "h")}
    gt_per_class: dict[int, int] = {int(c["id"]): 0 for c in gt.get("categories", [])}
    for i, (gb, gc) in gts.items():
        for c in gc.tolist():
            gt_per_class[c] = gt_per_class.get(c, 0) + 1
        if i not in dets:
            continue
        db, ds, dc = dets[i]
        allowed = dc[:, None] == gc[None, :]
        match = _greedy(box_iou(db, gb), allowed, iou_threshold)
        fw, fh = sizes.get(i, (1.0, 1.0))
        cols["img"].append(np.full(len(ds), i, np.int64))
        cols["score"].append(ds)
        cols["cat"].append(dc)
        cols["tp"].append(match >= 0)
        cols["w"].append((db[:, 2] - db[:, 0]) / max(fw, 1e-9))
        cols["h"].append((db[:, 3] - db[:, 1]) / max(fh, 1e-9))

    def cat(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(cols[key]).astype(dtype) if cols[key] else np.zeros(0, dtype)

    return MatchedDetections(
        cat("img", np.int64),
        cat("score", np.float64),
        cat("cat", np.int64),
        cat("tp", bool),
        cat("w", np.float64),
        cat("h", np.float64),
        gt_per_class,
    )


def confusion_matrix(
    gt: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    image_ids: Sequence[int],
    category_ids: Sequence[int],
    score_threshold: float,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """(K+1) x (K+1) counts, rows = ground truth class (last row: background, i.e. false
    positives), columns = predicted class (last column: missed, i.e. false negatives).

    Class-agnostic greedy matching of detections with score >= ``score_threshold``, so a truck
    detected as a car lands in the (truck, car) cell.
    """
    index = {int(c): k for k, c in enumerate(category_ids)}
    k_bg = len(category_ids)
    cm = np.zeros((k_bg + 1, k_bg + 1), np.int64)
    gts = gt_by_image(gt, image_ids)
    dets = dets_by_image(
        r for r in records if float(r["score"]) >= score_threshold and int(r["category_id"]) in index
    )
    for i, (gb, gc) in gts.items():
        db, _, dc = dets.get(i, (np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64)))
        allowed = np.ones((len(dc), len(gc)), bool)
        match = _greedy(box_iou(db, gb), allowed, iou_threshold)
        matched_gt = set()
        for k, j in enumerate(match.tolist()):
            pred = index[int(dc[k])]
            if j >= 0:
                matched_gt.add(j)
                cm[index.get(int(gc[j]), k_bg), pred] += 1
            else:
                cm[k_bg, pred] += 1
        for j, c in enumerate(gc.tolist()):
            if j not in matched_gt and c in index:
                cm[index[c], k_bg] += 1
    return cm
