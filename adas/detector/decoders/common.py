"""What every decoder shares: box conversions, the label map, selection (threshold, top-k,
NMS) and the way back to source-frame pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adas.detector.postprocess import Detections, batched_nms, nms
from adas.detector.preprocess import Geometry
from adas.intake.labels import label_columns

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import DetectionsPostprocess, LabelMap, RaggedPostprocess

GeometryArg = Geometry | Sequence[Geometry] | None


def per_image(geometry: GeometryArg, batch: int) -> list[Geometry | None]:
    """One geometry (or None) per image of the batch."""
    if geometry is None or isinstance(geometry, Geometry):
        return [geometry] * batch
    if len(geometry) != batch:
        raise ValueError(f"{len(geometry)} geometries for a batch of {batch} images")
    return list(geometry)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = (boxes[..., i] for i in range(4))
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)


def to_source(
    boxes_xyxy: np.ndarray,
    coordinates: str,
    geometry: Geometry | None,
    input_hw: tuple[int, int] | None,
) -> np.ndarray:
    """xyxy boxes in the declared ``coordinates`` -> source-frame pixels when ``geometry`` is
    given (else model-input pixels, clipped to the input frame as the heatmap decode does)."""
    boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
    if coordinates == "source_pixels":
        if geometry is None:
            return boxes.astype(np.float32)
        h, w = geometry.source_hw
        return np.clip(boxes, 0.0, [w, h, w, h]).astype(np.float32)
    if coordinates == "normalized":
        if input_hw is None:
            raise ValueError("normalized boxes need the model input size (a contract or a geometry)")
        ih, iw = input_hw
        boxes = boxes * [iw, ih, iw, ih]
    elif coordinates != "input_pixels":
        raise ValueError(f"unknown box coordinates {coordinates!r}")
    if geometry is not None:
        return geometry.boxes_to_source(boxes)
    if input_hw is None:
        return boxes.astype(np.float32)
    ih, iw = input_hw
    return np.clip(boxes, 0.0, [iw, ih, iw, ih]).astype(np.float32)


def map_labels(
    labels: np.ndarray, label_map: LabelMap, class_ids: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Model labels (or class-column indices) -> (category ids, mask of labels that name a
    contract class); background and unknown labels are masked out."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    ids = np.asarray(class_ids, np.int64)
    if label_map.mode == "category_id":
        valid = np.isin(labels, ids)
        return np.where(valid, labels, 0), valid
    k = labels - label_map.background_offset
    valid = (k >= 0) & (k < len(ids))
    return np.where(valid, ids[np.clip(k, 0, len(ids) - 1)], 0), valid


def column_classes(
    columns: int, label_map: LabelMap, class_ids: Sequence[int], tensor: str
) -> tuple[np.ndarray, np.ndarray]:
    """For class-score columns of ``tensor``: the indices of the columns that name a contract
    class, and their category ids. A column count the label map does not expect is refused
    (the usual cause is a transposed layout or a wrong class list)."""
    want = label_columns(label_map.mode, label_map.background_offset, class_ids)
    if columns != want if label_map.mode == "index" else columns < want:
        need = want if label_map.mode == "index" else f"at least {want}"
        raise ValueError(
            f"{tensor} has {columns} class columns; the contract's {len(class_ids)} classes with "
            f"label_map {label_map.mode} (background_offset {label_map.background_offset}) need "
            f"{need} (transposed layout?)"
        )
    cats, valid = map_labels(np.arange(columns), label_map, class_ids)
    if not valid.any():
        raise ValueError(
            f"none of the {columns} class columns names a contract class (label_map {label_map})"
        )
    return np.flatnonzero(valid), cats[valid]


def rows(
    outputs: Mapping[str, np.ndarray], post: DetectionsPostprocess | RaggedPostprocess
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Boxes (..., 4) xyxy, scores (...), labels (...) and, for a ``batch_index`` column, the
    batch index (...) of detection rows, packed (``columns``) or split."""
    if post.packed_output is not None:
        packed = np.asarray(outputs[post.packed_output])
        if packed.shape[-1] != len(post.columns):
            raise ValueError(
                f"packed output {post.packed_output!r} has {packed.shape[-1]} columns, the contract names "
                f"{len(post.columns)}: {list(post.columns)}"
            )
        col = {c: i for i, c in enumerate(post.columns)}
        boxes = packed[..., [col["x1"], col["y1"], col["x2"], col["y2"]]]
        batch = packed[..., col["batch_index"]] if "batch_index" in col else None
        return boxes, packed[..., col["score"]], packed[..., col["label"]], batch
    assert post.boxes_output and post.scores_output and post.labels_output  # the contract's rule
    boxes = np.asarray(outputs[post.boxes_output])
    scores = np.asarray(outputs[post.scores_output])
    labels = np.asarray(outputs[post.labels_output])
    # [.., K, 1] scores and labels (some exporters keep the axis) are [.., K].
    scores = scores[..., 0] if scores.ndim == boxes.ndim else scores
    labels = labels[..., 0] if labels.ndim == boxes.ndim else labels
    if boxes.shape[-1] != 4 or scores.shape != boxes.shape[:-1] or labels.shape != boxes.shape[:-1]:
        raise ValueError(
            f"split detections disagree: boxes {boxes.shape} (want [..., 4]), scores {scores.shape}, "
            f"labels {labels.shape}"
        )
    return boxes, scores, labels, None


def select(
    boxes: np.ndarray,
    scores: np.ndarray,
    category_ids: np.ndarray,
    score_threshold: float,
    max_detections: int,
    *,
    nms_iou_threshold: float | None = None,
    class_aware: bool = True,
    pre_nms_top_k: int | None = None,
) -> Detections:
    """Candidates of one image -> ``Detections``: score >= threshold, the best ``pre_nms_top_k``,
    NMS when an IoU threshold is given (class-aware or agnostic), the best ``max_detections``,
    sorted by descending score."""
    scores = np.asarray(scores, np.float32).reshape(-1)
    keep = np.flatnonzero(scores >= score_threshold)
    if pre_nms_top_k is not None and keep.size > pre_nms_top_k:
        keep = keep[np.argsort(-scores[keep], kind="stable")[:pre_nms_top_k]]
    boxes, scores, category_ids = boxes[keep], scores[keep], np.asarray(category_ids, np.int64)[keep]
    if nms_iou_threshold is None:
        order = np.argsort(-scores, kind="stable")
    elif class_aware:
        order = batched_nms(boxes, scores, category_ids, nms_iou_threshold, max_keep=max_detections)
    else:
        order = nms(boxes, scores, nms_iou_threshold, max_keep=max_detections)
    order = order[:max_detections]
    if order.size == 0:
        return Detections.empty()
    return Detections(boxes[order].astype(np.float32), scores[order], category_ids[order])


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)
