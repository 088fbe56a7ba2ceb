"""``dense``: candidates before NMS (YOLOv5/v8/11, decoded YOLOX), ``[B, N, F]`` or ``[B, F, N]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adas.detector.decoders.common import (
    GeometryArg,
    column_classes,
    cxcywh_to_xyxy,
    per_image,
    select,
    to_source,
)
from adas.detector.postprocess import Detections, sigmoid

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import DensePostprocess


def decode_dense(
    outputs: Mapping[str, np.ndarray],
    post: DensePostprocess,
    class_ids: Sequence[int],
    geometry: GeometryArg = None,
    input_hw: tuple[int, int] | None = None,
) -> list[Detections]:
    x = np.asarray(outputs[post.output], np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"dense output {post.output!r} must be 3-D ({post.layout}), got shape {x.shape}")
    if post.layout == "BFN":
        x = x.transpose(0, 2, 1)
    first_class = 4 + int(post.objectness)
    if x.shape[2] <= first_class:
        raise ValueError(
            f"dense output {post.output!r} has {x.shape[2]} features per candidate in layout {post.layout}: "
            f"fewer than 4 box values{' + objectness' if post.objectness else ''} + classes (transposed?)"
        )
    columns, categories = column_classes(
        x.shape[2] - first_class, post.label_map, class_ids, f"dense output {post.output!r} ({post.layout})"
    )
    class_scores = x[..., first_class:][..., columns]
    if post.scores == "logits":
        class_scores = sigmoid(class_scores)
    best = np.argmax(class_scores, axis=-1)
    scores = np.take_along_axis(class_scores, best[..., None], axis=-1)[..., 0]
    if post.objectness:
        objectness = x[..., 4]
        scores = scores * (sigmoid(objectness) if post.scores == "logits" else objectness)
    boxes = cxcywh_to_xyxy(x[..., :4]) if post.box_encoding == "cxcywh" else x[..., :4]
    results = []
    for i, g in enumerate(per_image(geometry, x.shape[0])):
        d = select(
            boxes[i],
            scores[i],
            categories[best[i]],
            post.score_threshold,
            post.max_detections,
            nms_iou_threshold=post.nms_iou_threshold,
            class_aware=post.nms == "class_aware",
            pre_nms_top_k=post.pre_nms_top_k,
        )
        results.append(
            Detections(to_source(d.boxes, post.coordinates, g, input_hw), d.scores, d.category_ids)
        )
    return results
