"""``detections``: the model decodes itself (NMS in the graph, one-to-one heads): a fixed K
rows per image, of which the padding rows are dropped."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adas.detector.decoders.common import GeometryArg, map_labels, per_image, rows, select, to_source
from adas.detector.postprocess import Detections

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import DetectionsPostprocess


def decode_detections(
    outputs: Mapping[str, np.ndarray],
    post: DetectionsPostprocess,
    class_ids: Sequence[int],
    geometry: GeometryArg = None,
    input_hw: tuple[int, int] | None = None,
) -> list[Detections]:
    boxes, scores, labels, _ = rows(outputs, post)
    if boxes.ndim == 2:  # one image without the batch axis
        boxes, scores, labels = boxes[None], scores[None], labels[None]
    b, k = scores.shape
    labels = np.rint(labels).astype(np.int64)  # packed rows carry labels as floats
    valid = np.ones((b, k), bool)
    if post.num_detections_output is not None:
        count = np.asarray(outputs[post.num_detections_output]).reshape(-1).astype(np.int64)
        if count.shape != (b,):
            raise ValueError(f"num_detections {count.shape} does not give one count per image of {b}")
        valid &= np.arange(k)[None, :] < count[:, None]
    if post.padding == "zero_score":
        valid &= scores > 0
    elif post.padding == "negative_label":
        valid &= labels >= 0
    categories, known = map_labels(labels, post.label_map, class_ids)
    valid &= known
    results = []
    for i, g in enumerate(per_image(geometry, b)):
        m = valid[i]
        d = select(boxes[i][m], scores[i][m], categories[i][m], post.score_threshold, post.max_detections)
        results.append(
            Detections(to_source(d.boxes, post.coordinates, g, input_hw), d.scores, d.category_ids)
        )
    return results
