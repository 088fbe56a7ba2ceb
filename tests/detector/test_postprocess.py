"""NMS, box IoU and CenterNet decode against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from adas.detector.postprocess import Detections, batched_nms, box_iou, decode, max_pool3x3, nms
from adas.detector.preprocess import normalize
from adas.intake.contract import HeatmapPostprocess, Normalization

POST = HeatmapPostprocess(
    stride=4,
    heatmap_output="heatmap",
    size_output="box_size",
    offset_output="offset",
    score_threshold=0.3,
    nms_iou_threshold=0.5,
    max_detections=100,
)


def test_box_iou_hand_computed() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array(
        [
            [0, 0, 10, 10],  # identical -> 1
            [5, 0, 15, 10],  # half overlap: inter 50, union 150 -> 1/3
            [5, 5, 15, 15],  # quarter: inter 25, union 175 -> 1/7
            [10, 0, 20, 10],  # touching edge -> 0
            [20, 20, 30, 30],  # disjoint -> 0
            [2, 2, 4, 4],  # inside: inter 4, union 100 -> 0.04
        ],
        np.float32,
    )
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 1 / 3, 1 / 7, 0.0, 0.0, 0.04], rtol=1e-12)
    assert box_iou(a, b).shape == (1, 6)
    np.testing.assert_allclose(box_iou(b, a)[:, 0], box_iou(a, b)[0])


def test_box_iou_degenerate_and_empty() -> None:
    zero = np.array([[3, 3, 3, 3]], np.float32)  # zero area, union 0 -> 0, not NaN
    assert box_iou(zero, zero)[0, 0] == 0.0
    assert box_iou(np.zeros((0, 4)), np.zeros((3, 4))).shape == (0, 3)


def test_nms_hand_computed() -> None:
    boxes = np.array(
        [
            [0, 0, 10, 10],  # 0: score .9, kept
            [1, 0, 11, 10],  # 1: IoU with 0 = 90/110 = .818 -> suppressed
            [5, 0, 15, 10],  # 2: IoU with 0 = 1/3 -> kept at .5
            [20, 20, 30, 30],  # 3: disjoint, kept
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [3, 0, 2])
    # At a threshold below 1/3 box 2 goes as well.
    np.testing.assert_array_equal(nms(boxes, scores, 0.3), [3, 0])
    # IoU exactly at the threshold is kept (only > threshold suppresses, as in torchvision).
    np.testing.assert_array_equal(nms(boxes[[0, 2]], scores[[0, 2]], 1 / 3), [0, 1])
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_batched_nms_is_class_wise() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 1, 0])
    np.testing.assert_array_equal(batched_nms(boxes, scores, classes, 0.5), [0, 1])


def test_max_pool3x3() -> None:
    x = np.zeros((1, 1, 3, 4), np.float32)
    x[0, 0, 1, 1] = 2.0
    x[0, 0, 0, 3] = 1.0
    p = max_pool3x3(x)
    expected = np.array([[2, 2, 2, 1], [2, 2, 2, 1], [2, 2, 2, 0]], np.float32)
    np.testing.assert_array_equal(p[0, 0], expected)


def _outputs(batch: int = 1) -> dict[str, np.ndarray]:
    heat = np.full((batch, 3, 24, 96), -10.0, np.float32)
    size = np.zeros((batch, 2, 24, 96), np.float32)
    offset = np.zeros((batch, 2, 24, 96), np.float32)
    return {"heatmap": heat, "box_size": size, "offset": offset}


def test_decode_single_peak() -> None:
    out = _outputs()
    # A truck (channel 1) centred at cell (x=10, y=5) + offset (0.5, 0.25): centre (42, 21) px.
    out["heatmap"][0, 1, 5, 10] = 2.0  # sigmoid(2) = 0.8808
    out["heatmap"][0, 1, 5, 11] = 1.0  # a lower neighbour: not a 3x3 peak, dropped
    out["box_size"][0, :, 5, 10] = (30.0, 8.0)
    out["offset"][0, :, 5, 10] = (0.5, 0.25)
    (det,) = decode(out, POST, [1, 2, 3])
    assert len(det) == 1
    np.testing.assert_allclose(det.boxes[0], [27.0, 17.0, 57.0, 25.0], atol=1e-5)
    np.testing.assert_allclose(det.scores[0], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    assert det.category_ids.tolist() == [2]
    assert det.boxes.dtype == np.float32 and det.category_ids.dtype == np.int64
    rec = det.to_coco(image_id=7)[0]
    assert rec["image_id"] == 7 and rec["category_id"] == 2
    np.testing.assert_allclose(rec["bbox"], [27.0, 17.0, 30.0, 8.0], atol=1e-5)


def test_decode_threshold_topk_nms_and_clip() -> None:
    out = _outputs(batch=2)
    # Image 0: two same-class peaks 2 cells (8 px) apart (both survive the 3x3 pool), both
    # 40x8 px: IoU = 32/48 = .67 > .5 -> NMS keeps the stronger one.
    out["heatmap"][0, 0, 10, 20] = 3.0
    out["heatmap"][0, 0, 10, 22] = 2.5
    out["box_size"][0, :, 10, 20] = (40.0, 8.0)
    out["box_size"][0, :, 10, 22] = (40.0, 8.0)
    # A different class on the same spot survives (class-wise NMS).
    out["heatmap"][0, 2, 10, 22] = 1.0
    # Below the 0.3 threshold: sigmoid(-1) = .27.
    out["heatmap"][0, 1, 3, 3] = -1.0
    # Image 1: a box hanging over the left border is clipped to the frame.
    out["heatmap"][1, 0, 0, 0] = 0.0  # score .5
    out["box_size"][1, :, 0, 0] = (10.0, 6.0)
    d0, d1 = decode(out, POST, [1, 2, 3])
    assert d0.category_ids.tolist() == [1, 3]
    np.testing.assert_allclose(d0.scores, [1 / (1 + np.exp(-3.0)), 1 / (1 + np.exp(-1.0))], rtol=1e-6)
    np.testing.assert_allclose(d1.boxes[0], [0.0, 0.0, 5.0, 3.0])
    # max_detections caps the result after NMS.
    capped = decode(out, POST.model_copy(update={"max_detections": 1}), [1, 2, 3])
    assert len(capped[0]) == 1 and capped[0].category_ids.tolist() == [1]


def test_decode_unbatched_and_empty() -> None:
    out = {k: v[0] for k, v in _outputs().items()}
    (det,) = decode(out, POST, [1, 2, 3])
    assert len(det) == 0 and det.boxes.shape == (0, 4)
    assert det.to_coco(1) == []
    with pytest.raises(ValueError, match="class ids"):
        decode(out, POST, [1, 2])


def test_detections_scaled() -> None:
    d = Detections(np.array([[1, 2, 3, 4]], np.float32), np.array([0.5], np.float32), np.array([1]))
    np.testing.assert_allclose(d.scaled(2.0, 0.5).boxes, [[2, 1, 6, 2]])


def test_normalize() -> None:
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[..., 0] = 255
    frames[..., 2] = 51
    norm = Normalization(scale=1 / 255, mean=(0.5, 0.0, 0.1), std=(0.5, 1.0, 0.2))
    x = normalize(frames, norm)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32 and x.flags.c_contiguous
    np.testing.assert_allclose(x[:, 0], 1.0)
    np.testing.assert_allclose(x[:, 1], 0.0)
    np.testing.assert_allclose(x[:, 2], 0.5, rtol=1e-6)
    assert normalize(frames[0], norm).shape == (1, 3, 4, 5)
    with pytest.raises(ValueError):
        normalize(np.zeros((2, 4, 5), np.uint8), norm)


@pytest.mark.parametrize("color", ["RGB", "BGR"])
def test_normalize_gives_the_bits_of_the_per_pixel_formula(color: str) -> None:
    """Every pixel value, every channel, both colour orders: the table normalize maps frames
    through holds exactly the float32 ``(pixel * scale - mean) / std`` (the engines, the
    equivalence check and Triton's preprocess all rely on the same bits)."""
    frames = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None, None], (2, 256, 3, 3)).copy()
    frames[1] = frames[1, ::-1]  # the channels see different values at the same place
    frames[1, :, :, 1] = 255 - frames[1, :, :, 1]
    for norm in (
        Normalization(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        Normalization(scale=1.0, mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375)),
    ):
        src = frames[..., ::-1] if color == "BGR" else frames
        x = src.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(norm.scale)
        mean = np.asarray(norm.mean, np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(norm.std, np.float32).reshape(1, 3, 1, 1)
        expected = (x - mean) / std
        got = normalize(frames, norm, color)
        assert got.flags.c_contiguous and got.dtype == np.float32
        assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
