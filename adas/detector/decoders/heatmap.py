"""``heatmap``: the CenterNet head, decoded by ``adas.detector.postprocess.decode`` (the same
function the Triton postprocess model vendors), then mapped to source-frame pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from adas.detector.decoders.common import GeometryArg, per_image
from adas.detector.postprocess import Detections, decode

if TYPE_CHECKING:  # annotations only: the decoders run where pydantic is absent (Triton)
    from adas.intake.contract import HeatmapPostprocess


def decode_heatmap(
    outputs: Mapping[str, np.ndarray],
    post: HeatmapPostprocess,
    class_ids: Sequence[int],
    geometry: GeometryArg = None,
) -> list[Detections]:
    dets = decode(outputs, post, class_ids)
    return [
        d if g is None else Detections(g.boxes_to_source(d.boxes), d.scores, d.category_ids)
        for d, g in zip(dets, per_image(geometry, len(dets)), strict=True)
    ]
