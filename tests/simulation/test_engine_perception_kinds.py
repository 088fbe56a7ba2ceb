"""Closed-loop and replay perception run any model family on the rendered frames as they are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adas.detector.dense_bundle import build_dense_contract, export_dense_onnx
from adas.detector.dense_model import build_dense_model
from adas.evaluation.runner import predict
from adas.intake.contract import Normalization
from adas.packaging.ort_engines import OrtEngine
from adas.simulation.perception import EnginePerception, FrameContext

NORM = Normalization(scale=1 / 255, mean=(0.45, 0.45, 0.45), std=(0.2, 0.2, 0.2))


def test_a_letterboxed_dense_engine_sees_rendered_frames_in_their_pixels(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():
        model.head4.cls_out.bias.fill_(0.0)
    contract = build_dense_contract(
        version="2.0.0", model_name="d", task="t", normalization=NORM,
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")], num_candidates=model.config.num_candidates,
    )  # fmt: skip
    path = tmp_path / "dense.onnx"
    path.write_bytes(export_dense_onnx(model))
    frame = np.random.default_rng(0).integers(0, 256, (96, 384, 3), dtype=np.uint8)  # the renderer's size
    ctx = FrameContext(seed=0, step=0, time_s=0.0, weather="clear", lighting="day", severity=0)
    seen = EnginePerception(path, contract).detect(frame, ctx)
    (offline,) = predict(OrtEngine(path, contract=contract), frame[None], [0], contract).detections
    assert len(seen) > 0
    np.testing.assert_allclose(seen.boxes, offline.boxes, atol=1e-4)
    assert seen.boxes[:, [1, 3]].max() <= 96 and seen.boxes[:, [0, 2]].max() <= 384
