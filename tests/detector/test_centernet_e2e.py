"""CenterNet with the decode in the graph (kind ``detections``) agrees with the heatmap decoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adas.detector.bundle import build_contract, run_detector
from adas.detector.decoders import decode
from adas.detector.e2e import CenterNetE2E, e2e_contract, write_e2e_bundle
from adas.detector.model import build_model
from adas.detector.preprocess import normalize
from adas.intake.bundle import read_contract
from adas.intake.contract import Lineage, Normalization

UNIT = Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def centernet() -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(num_classes=3, width=8).eval()
    with torch.no_grad():  # a livelier heatmap than the init prior, so that many peaks pass 0.3
        model.heatmap.bias.fill_(0.0)
        model.heatmap.weight.normal_(0.0, 0.05)
    return model


def frames(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (n, 96, 384, 3), dtype=np.uint8)


def test_in_graph_decode_equals_the_heatmap_decoder_without_nms(centernet: torch.nn.Module) -> None:
    base = build_contract(version="1.3.0", model_name="m", task="t", normalization=UNIT, score_threshold=0.3)
    # NMS at IoU 1.0 removes nothing: the heatmap decoder is then peaks + top-K, as in the graph.
    no_nms = base.postprocess.model_copy(update={"nms_iou_threshold": 1.0})
    x = torch.from_numpy(normalize(frames(3), UNIT))
    with torch.no_grad():
        heads = dict(zip(("heatmap", "box_size", "offset"), (o.numpy() for o in centernet(x)), strict=True))
        rows = CenterNetE2E(centernet).eval()(x).numpy()
    expected = decode(heads, no_nms, [1, 2, 3])
    got = decode({"detections": rows}, e2e_contract(base).postprocess, [1, 2, 3], input_hw=(96, 384))
    assert sum(len(d) for d in expected) > 30
    for e, g in zip(expected, got, strict=True):
        order_e, order_g = np.lexsort(e.boxes.T), np.lexsort(g.boxes.T)
        np.testing.assert_allclose(g.boxes[order_g], e.boxes[order_e], atol=1e-4)
        np.testing.assert_allclose(g.scores[order_g], e.scores[order_e], atol=1e-6)
        assert g.category_ids[order_g].tolist() == e.category_ids[order_e].tolist()


def test_onnx_bundle_runs_at_any_batch_and_matches_the_module(
    centernet: torch.nn.Module, tmp_path: Path
) -> None:
    base = build_contract(version="1.3.1", model_name="vehicle-centernet", task="t", normalization=UNIT)
    out = write_e2e_bundle(
        centernet, base, Lineage(training_run_id="r", dataset_tag="d", git_sha="0" * 7), tmp_path
    )
    contract = read_contract(out)
    assert contract.model_format == "onnx" and contract.postprocess.kind == "detections"
    assert contract.outputs[0].shape == [-1, 100, 6] and contract.version == "1.3.1"
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for n in (1, 4):
        x = normalize(frames(n), UNIT)
        with torch.no_grad():
            expected = CenterNetE2E(centernet).eval()(torch.from_numpy(x)).numpy()
        got = session.run(None, {"images": x})[0]
        assert got.shape == (n, 100, 6)
        for g, e in zip(got, expected, strict=True):
            # Equal scores may leave top-K in either order (and swap at the K-th place).
            keep_g, keep_e = g[g[:, 4] > g[-1, 4] + 1e-5], e[e[:, 4] > e[-1, 4] + 1e-5]
            np.testing.assert_allclose(keep_g[np.lexsort(keep_g.T)], keep_e[np.lexsort(keep_e.T)], atol=1e-4)
    # Through the contract end to end: the same detections as the heatmap bundle minus its NMS.
    dets = run_detector(centernet, frames(2), base)
    e2e = [
        d
        for d in decode(
            {"detections": session.run(None, {"images": normalize(frames(2), UNIT)})[0]}, contract
        )
    ]
    for heat, rows in zip(dets, e2e, strict=True):
        assert len(rows) >= len(heat)  # NMS only removes
