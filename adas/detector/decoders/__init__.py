"""One decoder interface for every output kind of the contract: raw model outputs ->
``Detections`` per image, in source-frame pixels when the preprocess geometry is given.

``decode(outputs, contract, geometry=...)`` dispatches on ``postprocess.kind``; each kind is one
vectorized numpy implementation in its own module. Every kind maps boxes back with the one
inverse of the preprocess placement, ``adas.detector.preprocess.Geometry.boxes_to_source``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from adas.detector.decoders.common import GeometryArg
from adas.detector.decoders.dense import decode_dense
from adas.detector.decoders.detections import decode_detections
from adas.detector.decoders.heatmap import decode_heatmap
from adas.detector.decoders.queries import decode_queries
from adas.detector.decoders.ragged import decode_ragged
from adas.detector.postprocess import Detections
from adas.detector.preprocess import Geometry

if TYPE_CHECKING:  # duck-typed at run time: the Triton postprocess vendors this package without pydantic
    from adas.intake.contract import Contract, Postprocess

__all__ = [
    "DECODERS",
    "Detections",
    "Geometry",
    "decode",
    "decode_dense",
    "decode_detections",
    "decode_heatmap",
    "decode_queries",
    "decode_ragged",
]


def _heatmap(outputs: Mapping[str, np.ndarray], post: Any, class_ids: Sequence[int], geometry: GeometryArg,
             input_hw: tuple[int, int] | None, batch_size: int | None) -> list[Detections]:  # fmt: skip
    return decode_heatmap(outputs, post, class_ids, geometry)


def _ragged(outputs: Mapping[str, np.ndarray], post: Any, class_ids: Sequence[int], geometry: GeometryArg,
            input_hw: tuple[int, int] | None, batch_size: int | None) -> list[Detections]:  # fmt: skip
    return decode_ragged(outputs, post, class_ids, geometry, input_hw, batch_size)


def _rows_or_dense(fn: Callable[..., list[Detections]]) -> Callable[..., list[Detections]]:
    def run(outputs: Mapping[str, np.ndarray], post: Any, class_ids: Sequence[int], geometry: GeometryArg,
            input_hw: tuple[int, int] | None, batch_size: int | None) -> list[Detections]:  # fmt: skip
        return fn(outputs, post, class_ids, geometry, input_hw)

    return run


# One decoder per ``postprocess.kind`` (``centernet`` is schema v1's name of ``heatmap``).
DECODERS: dict[str, Callable[..., list[Detections]]] = {
    "heatmap": _heatmap,
    "centernet": _heatmap,
    "dense": _rows_or_dense(decode_dense),
    "queries": _rows_or_dense(decode_queries),
    "detections": _rows_or_dense(decode_detections),
    "ragged": _ragged,
}


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
    maps boxes to source-frame pixels; without it boxes stay in model-input pixels. Dispatch is on
    ``postprocess.kind``, so any object with the contract's fields decodes (the Triton model
    passes a namespace built from the contract's JSON).
    """
    post: Any = contract_or_postprocess
    if hasattr(contract_or_postprocess, "postprocess"):  # a contract
        contract: Any = contract_or_postprocess
        post = contract.postprocess
        class_ids = [c.id for c in contract.classes] if class_ids is None else class_ids
        input_hw = (contract.input.shape[2], contract.input.shape[3]) if input_hw is None else input_hw
    if class_ids is None:
        raise ValueError("decode needs the class ids (the contract's classes in order)")
    if input_hw is None:
        first = geometry if isinstance(geometry, Geometry | None) else (geometry[0] if geometry else None)
        input_hw = first.input_hw if first is not None else None
    decoder = DECODERS.get(str(getattr(post, "kind", "")))
    if decoder is None:
        raise TypeError(f"no decoder for postprocess kind {getattr(post, 'kind', type(post).__name__)!r}")
    return decoder(outputs, post, class_ids, geometry, input_hw, batch_size)
