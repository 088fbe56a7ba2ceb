"""One decoder interface for every output kind of the contract: raw model outputs ->
``Detections`` per image, in source-frame pixels when the preprocess geometry is given.

``decode(outputs, contract, geometry=...)`` dispatches on ``postprocess.kind``; each kind is one
vectorized numpy implementation in its own module. Every kind maps boxes back with the one
inverse of the preprocess placement, ``adas.detector.preprocess.Geometry.boxes_to_source``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from adas.detector.decoders.common import GeometryArg
from adas.detector.decoders.dense import decode_dense
from adas.detector.decoders.detections import decode_detections
from adas.detector.decoders.heatmap import decode_heatmap
from adas.detector.decoders.queries import decode_queries
from adas.detector.decoders.ragged import decode_ragged
from adas.detector.postprocess import Detections
from adas.detector.preprocess import Geometry
from adas.intake.contract import (
    Contract,
    DensePostprocess,
    DetectionsPostprocess,
    HeatmapPostprocess,
    Postprocess,
    QueriesPostprocess,
    RaggedPostprocess,
)

__all__ = [
    "Detections",
    "Geometry",
    "decode",
    "decode_dense",
    "decode_detections",
    "decode_heatmap",
    "decode_queries",
    "decode_ragged",
]


def decode(
    outputs: Mapping[str, np.ndarray],
    contract_or_postprocess: Contract | Postprocess,
    class_ids: Sequence[int] | None = None,
    *,
    geometry: GeometryArg = None,
    input_hw: tuple[int, int] | None = None,
    batch_size: int | None = None,
) -> list[Detections]:
    """Raw outputs of a batch -> one ``Detections`` per image.

    Given a ``Contract``, the class ids and the input size come from it; given a bare
    postprocess, pass ``class_ids`` (the contract's ``classes`` in order) and, for normalized
    boxes without a geometry, ``input_hw``. ``geometry`` (one for the batch or one per image)
    maps boxes to source-frame pixels; without it boxes stay in model-input pixels.
    """
    if isinstance(contract_or_postprocess, Contract):
        post = contract_or_postprocess.postprocess
        class_ids = contract_or_postprocess.class_ids if class_ids is None else class_ids
        input_hw = contract_or_postprocess.input.height_width if input_hw is None else input_hw
    else:
        post = contract_or_postprocess
    if class_ids is None:
        raise ValueError("decode needs the class ids (the contract's classes in order)")
    if input_hw is None:
        first = geometry if isinstance(geometry, Geometry | None) else (geometry[0] if geometry else None)
        input_hw = first.input_hw if first is not None else None
    if isinstance(post, HeatmapPostprocess):
        return decode_heatmap(outputs, post, class_ids, geometry)
    if isinstance(post, DensePostprocess):
        return decode_dense(outputs, post, class_ids, geometry, input_hw)
    if isinstance(post, QueriesPostprocess):
        return decode_queries(outputs, post, class_ids, geometry, input_hw)
    if isinstance(post, DetectionsPostprocess):
        return decode_detections(outputs, post, class_ids, geometry, input_hw)
    if isinstance(post, RaggedPostprocess):
        return decode_ragged(outputs, post, class_ids, geometry, input_hw, batch_size)
    raise TypeError(f"no decoder for postprocess {type(post).__name__}")
