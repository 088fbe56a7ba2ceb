"""``ragged``: a variable number of detections per image, flattened over the batch
(torchvision-style exports, PaddleDetection, ONNX NMS + gather), split by a count tensor or a
batch-index column."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adas.detector.decoders.common import GeometryArg, map_labels, per_image, rows, select, to_source
from adas.detector.postprocess import Detections
from adas.detector.preprocess import Geometry

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import RaggedPostprocess


def decode_ragged(
    outputs: Mapping[str, np.ndarray],
    post: RaggedPostprocess,
    class_ids: Sequence[int],
    geometry: GeometryArg = None,
    input_hw: tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> list[Detections]:
    """``batch_size`` (or one geometry per image) says how many images there are when rows
    carry a batch index: images after the last one with a detection have no rows."""
    boxes, scores, labels, batch = rows(outputs, post)
    boxes, scores = boxes.reshape(-1, 4), scores.reshape(-1)
    labels = np.rint(labels.reshape(-1)).astype(np.int64)
    if post.count_output is not None:
        counts = np.asarray(outputs[post.count_output]).reshape(-1).astype(np.int64)
        if counts.sum() != scores.shape[0] or (counts < 0).any():
            raise ValueError(f"counts {counts.tolist()} do not add up to the {scores.shape[0]} rows")
        image = np.repeat(np.arange(counts.shape[0]), counts)
        n_images = counts.shape[0]
    else:
        if batch is None:
            assert post.batch_index_output is not None  # the contract's rule
            batch = np.asarray(outputs[post.batch_index_output])
        image = np.rint(np.asarray(batch).reshape(-1)).astype(np.int64)
        if image.shape != scores.shape:
            raise ValueError(f"{image.shape[0]} batch indices for {scores.shape[0]} rows")
        if not isinstance(geometry, Geometry | None):
            batch_size = len(geometry) if batch_size is None else batch_size
        n_images = batch_size if batch_size is not None else int(image.max(initial=-1)) + 1
        if (image < 0).any() or (image >= n_images).any():
            raise ValueError(f"batch indices {sorted(set(image.tolist()))} outside a batch of {n_images}")
    categories, known = map_labels(labels, post.label_map, class_ids)
    results = []
    for i, g in enumerate(per_image(geometry, n_images)):
        m = (image == i) & known
        d = select(boxes[m], scores[m], categories[m], post.score_threshold, post.max_detections)
        results.append(
            Detections(to_source(d.boxes, post.coordinates, g, input_hw), d.scores, d.category_ids)
        )
    return results
