"""``queries``: set predictions (DETR, Deformable DETR, RT-DETR): class scores per query and
normalized cxcywh boxes; no NMS."""

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
    softmax,
    to_source,
)
from adas.detector.postprocess import Detections, sigmoid

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import QueriesPostprocess


def decode_queries(
    outputs: Mapping[str, np.ndarray],
    post: QueriesPostprocess,
    class_ids: Sequence[int],
    geometry: GeometryArg = None,
    input_hw: tuple[int, int] | None = None,
) -> list[Detections]:
    logits = np.asarray(outputs[post.scores_output], np.float32)
    if logits.ndim == 2:
        logits = logits[None]
    if post.boxes_output is None:
        boxes, logits = logits[..., :4], logits[..., 4:]
    else:
        boxes = np.asarray(outputs[post.boxes_output], np.float32)
        boxes = boxes[None] if boxes.ndim == 2 else boxes
    b, q, _ = logits.shape
    if boxes.shape != (b, q, 4):
        raise ValueError(
            f"query boxes {boxes.shape} do not match the class scores {logits.shape}: want [B, Q, 4]"
        )
    if post.activation == "softmax":
        probs = softmax(logits)[..., :-1]  # the last column is "no object"
    elif post.activation == "sigmoid":
        probs = sigmoid(logits)
    else:
        probs = logits
    columns, categories = column_classes(
        probs.shape[2], post.label_map, class_ids, f"queries output {post.scores_output!r}"
    )
    probs = probs[..., columns]
    xyxy = cxcywh_to_xyxy(boxes)
    results = []
    for i, g in enumerate(per_image(geometry, b)):
        if post.activation == "softmax":
            # One detection per query: its best class other than "no object".
            best = np.argmax(probs[i], axis=-1)
            query, scores = np.arange(q), probs[i, np.arange(q), best]
        else:
            # Independent class scores: the best query x class pairs (a query may carry two labels).
            flat = probs[i].reshape(-1)
            top = np.argsort(-flat, kind="stable")[: post.max_detections]
            query, best = np.divmod(top, probs.shape[2])
            scores = flat[top]
        d = select(xyxy[i, query], scores, categories[best], post.score_threshold, post.max_detections)
        results.append(Detections(to_source(d.boxes, "normalized", g, input_hw), d.scores, d.category_ids))
    return results
