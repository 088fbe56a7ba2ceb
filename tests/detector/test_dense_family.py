"""The dense (YOLO-style) family: model outputs, letterboxed targets, assignment, loss, bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adas.detector.bundle import run_detector
from adas.detector.data import CocoFrames
from adas.detector.dense_bundle import build_dense_contract, write_dense_bundle
from adas.detector.dense_model import DenseConfig, DenseDetector, anchor_points, build_dense_model
from adas.detector.dense_train import LetterboxDataset, assign, dense_loss, giou_loss, pairwise_iou
from adas.intake.bundle import read_contract
from adas.intake.contract import Lineage, Normalization

CLASSES = [(1, "car"), (2, "truck"), (3, "motorcycle")]
UNIT = Normalization(scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@pytest.fixture(scope="module")
def model() -> DenseDetector:
    torch.manual_seed(0)
    return build_dense_model(num_classes=3, width=8).eval()


def test_output_is_bfn_cxcywh_then_probabilities_and_matches_the_training_boxes(model: DenseDetector) -> None:
    x = torch.randn(2, 3, 160, 512)
    with torch.no_grad():
        out = model(x)
        logits, xyxy = model.forward_train(x)
    assert out.shape == (2, 4 + 3, 40 * 128 + 20 * 64) == (2, 7, model.config.num_candidates)
    cx, cy, w, h = out[:, 0], out[:, 1], out[:, 2], out[:, 3]
    torch.testing.assert_close(torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1), xyxy)
    torch.testing.assert_close(out[:, 4:].transpose(1, 2), torch.sigmoid(logits))
    assert bool((w > 0).all()) and bool((h > 0).all())


def test_anchor_points_are_cell_centres_level_by_level() -> None:
    points = anchor_points((16, 32), (4, 8))
    assert points.shape == (4 * 8 + 2 * 4, 2)
    assert points[0].tolist() == [2.0, 2.0] and points[1].tolist() == [6.0, 2.0]  # stride 4, row-major
    assert points[32].tolist() == [4.0, 4.0]  # first cell of stride 8


def test_letterbox_dataset_maps_source_boxes_into_the_padded_input() -> None:
    frames = np.zeros((1, 96, 384, 3), np.uint8)
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 384, "height": 96}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [30.0, 12.0, 24.0, 9.0], "category_id": 3, "area": 216}
        ],
        "categories": [{"id": c, "name": n} for c, n in CLASSES],
    }
    ds = LetterboxDataset(CocoFrames(coco, frames, [7]), [1, 2, 3], UNIT, (160, 512), pad_value=114)
    x, target = ds[0]
    assert x.shape == (3, 160, 512)
    # 96x384 -> 128x512 (scale 4/3), 16 rows of padding on top and bottom, valued 114/255.
    assert float(x[0, 0, 0]) == pytest.approx(114 / 255, abs=1e-6)
    assert float(x[0, 80, 0]) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(target.numpy(), [[40.0, 32.0, 72.0, 44.0, 2.0]], atol=1e-4)


def test_assignment_gives_every_box_a_positive_and_a_contested_point_to_the_cheaper_box() -> None:
    points = anchor_points((32, 64), (4, 8))
    strides = torch.cat([torch.full((8 * 16,), 4.0), torch.full((4 * 8,), 8.0)])
    n = points.shape[0]
    gt = torch.tensor(
        [[10.0, 10.0, 30.0, 20.0, 0.0], [12.0, 10.0, 32.0, 20.0, 1.0], [50.0, 4.0, 58.0, 10.0, 2.0]]
    )
    # Predictions: every candidate predicts the first box, and class 0 is confident everywhere.
    boxes = gt[0, :4].expand(n, 4).clone()
    logits = torch.full((n, 3), -5.0)
    logits[:, 0] = 5.0
    idx, g = assign(logits, boxes, gt, points, strides)
    assert set(g.tolist()) == {0, 1, 2}, "every ground-truth box has at least one positive"
    assert len(set(idx.tolist())) == len(idx), "a point is assigned to one box only"
    centre = (gt[g, :2] + gt[g, 2:4]) / 2
    assert bool(((points[idx] - centre).abs() < 2.5 * strides[idx, None]).all()), (
        "positives lie near the centre"
    )
    # Box 0 is both perfectly predicted and confidently classified: it is the cheapest claimant.
    assert int((g == 0).sum()) >= int((g == 1).sum())


def test_no_ground_truth_means_no_positives_and_only_background_loss(model: DenseDetector) -> None:
    x = torch.randn(1, 3, 160, 512)
    logits, boxes = model.forward_train(x)
    losses = dense_loss(model, logits, boxes, [torch.zeros((0, 5))])
    assert float(losses["positives"]) == 0.0 and float(losses["box"].detach()) == 0.0
    assert float(losses["cls"]) > 0.0
    losses["loss"].backward()  # the graph is intact without positives


def test_giou_and_iou_on_hand_computed_boxes() -> None:
    a = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    b = torch.tensor([[5.0, 0.0, 15.0, 10.0]])
    assert float(pairwise_iou(a, b)) == pytest.approx(50 / 150)
    assert float(giou_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    far = torch.tensor([[20.0, 0.0, 30.0, 10.0]])
    # IoU 0, hull 30x10 = 300, union 200: GIoU = 0 - 100/300.
    assert float(giou_loss(a, far)) == pytest.approx(1 + 1 / 3)


def test_a_training_step_lowers_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    m = DenseDetector(DenseConfig(num_classes=3, width=8, head=16))
    x = torch.randn(2, 3, 160, 512)
    targets = [torch.tensor([[40.0, 40.0, 80.0, 60.0, 0.0]]), torch.tensor([[200.0, 70.0, 215.0, 80.0, 2.0]])]
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    first = None
    for _ in range(8):
        loss = dense_loss(m, *m.forward_train(x), targets)["loss"]
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * first


def test_onnx_bundle_is_a_valid_v2_contract_and_runs_like_the_module(
    model: DenseDetector, tmp_path: Path
) -> None:
    lineage = Lineage(training_run_id="t", dataset_tag="d", git_sha="0000000")
    out = write_dense_bundle(
        model, tmp_path / "b", version="2.0.0", model_name="vehicle-dense", task="t", lineage=lineage,
        normalization=UNIT, classes=CLASSES,
    )  # fmt: skip
    contract = read_contract(out)
    assert contract.model_format == "onnx" and contract.postprocess.kind == "dense"
    assert contract.input.resize == "letterbox" and contract.input.shape == [-1, 3, 160, 512]
    assert contract.outputs[0].shape == [-1, 7, 6400]
    session = ort.InferenceSession(str(out / contract.model_file), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 3, 160, 512)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(session.run(None, {"images": x})[0], expected, atol=1e-4, rtol=1e-4)


def test_run_detector_returns_source_frame_boxes_through_the_letterbox(model: DenseDetector) -> None:
    """A model whose single candidate is a known box in input pixels comes back un-padded."""

    class OneBox(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 7, 6400)
            out[:, :4, 0] = torch.tensor([56.0, 38.0, 32.0, 12.0])  # cxcywh in the 160x512 input
            out[:, 6, 0] = 0.9  # motorcycle
            return out

    contract = build_dense_contract(
        version="2.0.0", model_name="m", task="t", normalization=UNIT, classes=CLASSES, num_candidates=6400
    )
    (dets,) = run_detector(OneBox(), np.zeros((1, 96, 384, 3), np.uint8), contract)
    np.testing.assert_allclose(dets.boxes, [[30.0, 12.0, 54.0, 21.0]], atol=1e-4)
    assert dets.category_ids.tolist() == [3] and dets.scores.tolist() == pytest.approx([0.9])
