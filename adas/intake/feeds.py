"""What a model's session is fed for a placed batch: the image input, and the contract's optional
source-size input (RT-DETR's ``orig_target_sizes``, PaddleDetection's ``im_shape``).

One function for every runner: the sandboxed reference, the ONNX Runtime engines, INT8
calibration, and the Triton preprocess model, which vendors this file (its Python environment has
numpy and nothing of ours), so that served and offline feeds are the same arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from adas.intake.contract import InputSpec


def model_feeds(spec: InputSpec, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """``{input name: array}`` for a batch ``x`` placed as ``spec`` says: the image, and, when the
    contract declares a source-size input, ``[B, 2]`` of ``source_hw`` in the model's order and
    dtype (default: the input's own size, i.e. frames already at the model's input size, as
    noise probes are). A batch shares one source size: frames are placed batch by batch."""
    batch = np.ascontiguousarray(x, dtype=spec.dtype)
    feeds = {spec.name: batch}
    size = spec.source_size
    if size is not None:
        h, w = (spec.shape[2], spec.shape[3]) if source_hw is None else source_hw
        row = (h, w) if size.order == "hw" else (w, h)
        feeds[size.name] = np.ascontiguousarray(np.tile(np.asarray(row, size.dtype), (batch.shape[0], 1)))
    return feeds


def feed_names(spec: InputSpec) -> list[str]:
    """The names :func:`model_feeds` feeds, in order: the image, then the source-size input if any."""
    return [spec.name] + ([spec.source_size.name] if spec.source_size is not None else [])
