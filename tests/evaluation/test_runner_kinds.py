"""The evaluation runner is family-agnostic: any kind, any input size, answers in frame pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adas.detector.bundle import build_contract
from adas.detector.decoders import decode
from adas.detector.dense_bundle import build_dense_contract, export_dense_onnx
from adas.detector.dense_model import build_dense_model
from adas.detector.e2e import e2e_contract, export_e2e_onnx
from adas.detector.model import build_model
from adas.detector.postprocess import Detections
from adas.detector.preprocess import preprocess
from adas.evaluation.runner import candidate_scores, frame_size, predict
from adas.intake.contract import Normalization
from adas.packaging.ort_engines import OrtEngine

NORM = Normalization(scale=1 / 255, mean=(0.45, 0.45, 0.45), std=(0.2, 0.2, 0.2))
CLASSES = [(1, "car"), (2, "truck"), (3, "motorcycle")]


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (5, 96, 384, 3), dtype=np.uint8)


def test_a_letterboxed_dense_engine_is_decoded_into_frame_pixels(tmp_path: Path, frames: np.ndarray) -> None:
    torch.manual_seed(0)
    model = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():
        model.head4.cls_out.bias.fill_(0.0)
    contract = build_dense_contract(
        version="2.0.0", model_name="d", task="t", normalization=NORM, classes=CLASSES,
        num_candidates=model.config.num_candidates,
    )  # fmt: skip
    path = tmp_path / "dense.onnx"
    path.write_bytes(export_dense_onnx(model))
    engine = OrtEngine(path, contract=contract)
    p = predict(engine, frames, [10, 11, 12, 13, 14], contract, score_threshold=0.05, batch_size=2)
    x, geometry = preprocess(frames, contract.input)
    expected = decode(engine.run(x), contract.postprocess.model_copy(update={"score_threshold": 0.05}),
                      [1, 2, 3], geometry=geometry)  # fmt: skip
    assert sum(len(d) for d in p.detections) > 0
    for got, want in zip(p.detections, expected, strict=True):
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-4)
        assert got.boxes[:, [1, 3]].max(initial=0) <= 96 and got.boxes[:, [0, 2]].max(initial=0) <= 384
    # Image scores from the decoded candidates: the best score, and the free energy of the top 10.
    np.testing.assert_allclose(p.max_score, [d.scores.max(initial=0.0) for d in expected], atol=1e-6)
    assert np.all(p.energy <= 0) and np.all(np.isfinite(p.energy))


def test_centernet_and_its_e2e_export_score_the_same_frames_alike(tmp_path: Path, frames: np.ndarray) -> None:
    """Cross-family on one set of frames: the heatmap head and the in-graph decode agree wherever
    NMS removed nothing."""
    torch.manual_seed(0)
    centernet = build_model(width=8)
    with torch.no_grad():
        centernet.heatmap.weight.normal_(std=50.0)
    base = build_contract(
        version="1.0.0", model_name="c", task="t", normalization=NORM, nms_iou_threshold=1.0
    )
    heat_path, e2e_path = tmp_path / "heat.onnx", tmp_path / "e2e.onnx"
    torch.onnx.export(
        centernet.eval().fuse(), (torch.zeros(1, 3, 96, 384),), str(heat_path), dynamo=False, opset_version=17,
        input_names=["images"], output_names=["heatmap", "box_size", "offset"],
        dynamic_axes={n: {0: "b"} for n in ("images", "heatmap", "box_size", "offset")},
    )  # fmt: skip
    e2e_path.write_bytes(export_e2e_onnx(centernet))
    e2e = e2e_contract(base)
    heat = predict(OrtEngine(heat_path, contract=base), frames, list(range(5)), base, score_threshold=0.3)
    rows = predict(OrtEngine(e2e_path, contract=e2e), frames, list(range(5)), e2e, score_threshold=0.3)
    assert sum(len(d) for d in heat.detections) > 10
    for a, b in zip(heat.detections, rows.detections, strict=True):
        assert len(a) == len(b)
        np.testing.assert_allclose(np.sort(a.scores), np.sort(b.scores), atol=1e-5)


def test_candidate_scores_are_max_and_free_energy_of_the_top_k() -> None:
    d = Detections(np.zeros((3, 4), np.float32), np.array([0.9, 0.5, 0.1], np.float32), np.ones(3, np.int64))
    best, energy = candidate_scores([d, Detections.empty()], k=4)
    assert best.tolist() == pytest.approx([0.9, 0.0])
    assert energy[0] == pytest.approx((np.log(0.1) + np.log(0.5) + np.log(0.9) + 0.0) / 4)
    assert energy[1] == 0.0  # no candidate at all: the most "background" an image can be


def test_frame_size_is_the_manifests_first_image() -> None:
    assert frame_size({"images": [{"height": 96, "width": 384}, {"height": 1, "width": 1}]}) == (96, 384)
    with pytest.raises(ValueError, match="no images"):
        frame_size({"images": []})
