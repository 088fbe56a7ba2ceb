"""One decoder per output kind, against hand-computed boxes in source-frame pixels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from adas.detector import postprocess
from adas.detector.decoders import decode
from adas.detector.preprocess import placement
from adas.intake.contract import (
    Contract,
    DensePostprocess,
    DetectionsPostprocess,
    QueriesPostprocess,
    RaggedPostprocess,
)

IDS = [1, 3]  # contract classes: channel/label k -> category IDS[k]
SEL: dict[str, Any] = {"score_threshold": 0.25, "max_detections": 100}
# 96x384 frames in a 160x512 input: r = 4/3, 16 rows of padding on top (centre) or none (top-left).
CENTER = placement((96, 384), (160, 512), "letterbox", "center")
TOP_LEFT = placement((96, 384), (160, 512), "letterbox", "top_left")
STRETCH = placement((80, 256), (160, 512), "stretch")  # x2 both axes


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


def _assert(d: postprocess.Detections, boxes: list[list[float]], scores: list[float], ids: list[int]) -> None:
    np.testing.assert_allclose(d.boxes, np.asarray(boxes, np.float32).reshape(-1, 4), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d.scores, scores, rtol=1e-5)
    np.testing.assert_array_equal(d.category_ids, ids)


# --------------------------------------------------------------------------- dense

# [N, F] = cx, cy, w, h, p(class 1), p(class 3)
CANDIDATES = np.array(
    [
        [120, 46, 40, 20, 0.9, 0.1],  # xyxy [100, 36, 140, 56]
        [121, 46, 40, 20, 0.1, 0.8],  # the same object, the other class: kept only class-aware
        [122, 46, 40, 20, 0.6, 0.1],  # same object, same class: suppressed
        [300, 80, 20, 20, 0.1, 0.7],  # xyxy [290, 70, 310, 90]
        [400, 80, 20, 20, 0.2, 0.1],  # below the threshold
    ],
    np.float32,
)
# In source pixels through the centred letterbox: (x - 0) * 3/4, (y - 16) * 3/4.
DENSE_CENTER = (
    [[75, 15, 105, 30], [75.75, 15, 105.75, 30], [217.5, 40.5, 232.5, 55.5]],
    [0.9, 0.8, 0.7],
    [1, 3, 3],
)


def _dense(**kw: Any) -> DensePostprocess:
    return DensePostprocess(
        kind="dense", output="out", nms_iou_threshold=0.5, **{"layout": "BNF", **SEL, **kw}
    )


@pytest.mark.parametrize("layout", ["BNF", "BFN"])
def test_dense_both_layouts_letterbox_centre(layout: str) -> None:
    x = CANDIDATES[None] if layout == "BNF" else CANDIDATES.T[None]
    (d,) = decode({"out": x}, _dense(layout=layout), IDS, geometry=CENTER)
    _assert(d, *DENSE_CENTER)


def test_dense_layout_declared_wrongly_is_refused_not_decoded() -> None:
    # [1, 6, 5] is BFN; read as BNF it has 5 features = 4 box + 1 class column, not 2.
    with pytest.raises(ValueError, match=r"1 class columns.*need 2 \(transposed layout\?\)"):
        decode({"out": CANDIDATES.T[None]}, _dense(layout="BNF"), IDS)
    with pytest.raises(ValueError, match="transposed"):
        decode({"out": CANDIDATES[:, :4].T[None]}, _dense(layout="BNF"), IDS)


def test_dense_agnostic_nms_top_left_and_xyxy() -> None:
    xyxy = CANDIDATES.copy()
    xyxy[:, :4] = postprocess_box(CANDIDATES[:, :4])
    (d,) = decode({"out": xyxy[None]}, _dense(box_encoding="xyxy", nms="agnostic"), IDS, geometry=TOP_LEFT)
    # Top-left letterbox: no vertical offset, y * 3/4; the class-3 duplicate goes too.
    _assert(d, [[75, 27, 105, 42], [217.5, 52.5, 232.5, 67.5]], [0.9, 0.7], [1, 3])


def postprocess_box(cxcywh: np.ndarray) -> np.ndarray:
    cx, cy, w, h = cxcywh.T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def test_dense_objectness_and_logits() -> None:
    objectness = np.array([1.0, 1.0, 1.0, 0.5, 1.0], np.float32)
    with_obj = np.concatenate([CANDIDATES[:, :4], objectness[:, None], CANDIDATES[:, 4:]], axis=1)
    (d,) = decode({"out": with_obj[None]}, _dense(objectness=True), IDS, geometry=CENTER)
    # The score is objectness x class: the last real box drops to 0.35.
    _assert(d, DENSE_CENTER[0], [0.9, 0.8, 0.35], [1, 3, 3])
    logits = with_obj.astype(np.float64)
    logits[:, 4:] = _logit(np.clip(with_obj[:, 4:], 1e-6, 1 - 1e-6))
    (d,) = decode({"out": logits[None]}, _dense(objectness=True, scores="logits"), IDS, geometry=CENTER)
    _assert(d, DENSE_CENTER[0], [0.9, 0.8, 0.35], [1, 3, 3])


def test_dense_background_column_and_pre_nms_top_k() -> None:
    # SSD-style: column 0 is background (label_map offset 1).
    bg = np.concatenate([CANDIDATES[:, :4], np.full((5, 1), 0.99, np.float32), CANDIDATES[:, 4:]], axis=1)
    post = _dense(label_map={"background_offset": 1}, pre_nms_top_k=1)
    (d,) = decode({"out": bg[None]}, post, IDS)
    _assert(d, [[100, 36, 140, 56]], [0.9], [1])  # model-input pixels without a geometry


def test_dense_normalized_boxes_need_the_input_size() -> None:
    norm = CANDIDATES.copy()
    norm[:, :4] /= [512, 160, 512, 160]
    (d,) = decode({"out": norm[None]}, _dense(coordinates="normalized"), IDS, geometry=CENTER)
    _assert(d, *DENSE_CENTER)
    with pytest.raises(ValueError, match="input size"):
        decode({"out": norm[None]}, _dense(coordinates="normalized"), IDS)


# --------------------------------------------------------------------------- queries


def _queries(**kw: Any) -> QueriesPostprocess:
    return QueriesPostprocess(kind="queries", scores_output="logits", **{**SEL, **kw})


def test_queries_softmax_drops_the_trailing_no_object_class() -> None:
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 1.0, 0.0]], np.float32)
    boxes = np.array([[0.5, 0.5, 0.25, 0.5], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.125, 0.25]], np.float32)
    post = _queries(boxes_output="boxes", activation="softmax")
    (d,) = decode({"logits": logits[None], "boxes": boxes[None]}, post, IDS, geometry=STRETCH)
    # Normalized cxcywh x (512, 160) -> input px, then / 2 for the stretch.
    # q0: [192, 40, 320, 120] -> [96, 20, 160, 60], p = e^2 / (e^2 + 2); q1 is "no object".
    # q2: [96, 100, 160, 140] -> [48, 50, 80, 70], p = e / (e + 2).
    e = np.e
    _assert(d, [[96, 20, 160, 60], [48, 50, 80, 70]], [e**2 / (e**2 + 2), e / (e + 2)], [1, 3])


def test_queries_sigmoid_concatenated_top_k_over_query_class_pairs() -> None:
    # [Q, 4 + C], boxes first (Ultralytics RT-DETR); q0 is confident in both classes.
    x = np.array(
        [
            [0.5, 0.5, 0.25, 0.5, 0.9, 0.8],
            [0.25, 0.75, 0.125, 0.25, 0.1, 0.3],
            [0.9, 0.9, 0.1, 0.1, 0.1, 0.1],
        ],
        np.float32,
    )
    raw = _queries(activation="none", max_detections=2)
    (d,) = decode({"logits": x[None]}, raw, IDS, geometry=STRETCH)
    _assert(d, [[96, 20, 160, 60], [96, 20, 160, 60]], [0.9, 0.8], [1, 3])
    logits = x.copy()
    logits[:, 4:] = _logit(x[:, 4:])
    (d,) = decode({"logits": logits[None]}, _queries(activation="sigmoid"), IDS, geometry=STRETCH)
    _assert(d, [[96, 20, 160, 60], [96, 20, 160, 60], [48, 50, 80, 70]], [0.9, 0.8, 0.3], [1, 3, 3])


def test_queries_sparse_category_ids() -> None:
    # DETR on COCO-91: column j is category j ("N/A" gaps), then no-object. Contract ids 1, 3.
    logits = np.full((2, 5), -5.0, np.float32)
    logits[0, 3] = 5.0  # category 3
    logits[1, 2] = 5.0  # category 2: not a contract class -> dropped
    boxes = np.tile(np.array([0.5, 0.5, 0.25, 0.5], np.float32), (2, 1))
    post = _queries(boxes_output="boxes", activation="softmax", label_map={"mode": "category_id"})
    (d,) = decode({"logits": logits[None], "boxes": boxes[None]}, post, IDS, input_hw=(160, 512))
    assert d.category_ids.tolist() == [3]
    np.testing.assert_allclose(d.boxes, [[192, 40, 320, 120]])


# --------------------------------------------------------------------------- detections


def _detections(**kw: Any) -> DetectionsPostprocess:
    return DetectionsPostprocess(kind="detections", **{**SEL, **kw})


def test_detections_packed_with_num_detections_in_input_pixels() -> None:
    packed = np.zeros((2, 3, 6), np.float32)
    packed[0, 0] = [100, 36, 140, 56, 0.9, 0]
    packed[0, 1] = [290, 70, 310, 90, 0.7, 1]
    packed[1, 0] = [1, 1, 5, 5, 0.99, 0]  # past image 1's count of 0: padding, not a detection
    post = _detections(packed_output="dets", num_detections_output="n", padding="num_detections")
    d0, d1 = decode({"dets": packed, "n": np.array([[2], [0]], np.int32)}, post, IDS, geometry=CENTER)
    _assert(d0, [[75, 15, 105, 30], [217.5, 40.5, 232.5, 55.5]], [0.9, 0.7], [1, 3])
    assert len(d1) == 0


def test_detections_padding_sentinels_and_coordinate_spaces() -> None:
    packed = np.array(
        [[[0.2, 0.3, 0.4, 0.6, 0.8, 1], [0, 0, 0, 0, 0, 0], [0.1, 0.1, 0.2, 0.2, 0.5, -1]]], np.float32
    )
    zero = _detections(packed_output="p", padding="zero_score", coordinates="normalized")
    (d,) = decode({"p": packed}, zero, IDS, geometry=TOP_LEFT)
    # Row 2 has a score: label -1 is no class of the contract, so it is dropped anyway.
    _assert(d, [[102.4 * 0.75, 48 * 0.75, 204.8 * 0.75, 96 * 0.75]], [0.8], [3])
    negative = _detections(packed_output="p", padding="negative_label", coordinates="source_pixels")
    packed[0, 1, 4] = 0.3  # a padding row with a score, marked by its label only
    packed[0, 1, 5] = -1
    (d,) = decode({"p": packed}, negative, IDS)
    _assert(d, [[0.2, 0.3, 0.4, 0.6]], [0.8], [3])


def test_detections_split_with_background_offset_and_source_pixels() -> None:
    # lyuwenyu RT-DETR / torchvision style: labels 1-based (0 = background), boxes in source px.
    boxes = np.array([[[10, 20, 30, 40], [50, 60, 500, 90]]], np.float32)
    scores = np.array([[[0.9], [0.6]]], np.float32)  # [B, K, 1]
    labels = np.array([[2, 0]], np.int64)  # 2 -> classes[1] = 3; 0 is background
    post = _detections(
        boxes_output="b",
        scores_output="s",
        labels_output="l",
        padding="zero_score",
        coordinates="source_pixels",
        label_map={"background_offset": 1},
    )
    (d,) = decode({"b": boxes, "s": scores, "l": labels}, post, IDS, geometry=CENTER)
    _assert(d, [[10, 20, 30, 40]], [0.9], [3])


# --------------------------------------------------------------------------- ragged


def _ragged(**kw: Any) -> RaggedPostprocess:
    return RaggedPostprocess(kind="ragged", **{**SEL, **kw})


def test_ragged_with_a_count_tensor() -> None:
    boxes = np.array([[100, 36, 140, 56], [290, 70, 310, 90], [0, 16, 512, 144]], np.float32)
    outputs = {
        "boxes": boxes,
        "scores": np.array([0.7, 0.9, 0.5], np.float32),
        "labels": np.array([0, 1, 1]),
        "counts": np.array([2, 0, 1]),
    }
    post = _ragged(
        boxes_output="boxes", scores_output="scores", labels_output="labels", count_output="counts"
    )
    d0, d1, d2 = decode(outputs, post, IDS, geometry=CENTER)
    _assert(d0, [[217.5, 40.5, 232.5, 55.5], [75, 15, 105, 30]], [0.9, 0.7], [3, 1])  # by score
    assert len(d1) == 0
    _assert(d2, [[0, 0, 384, 96]], [0.5], [3])


def test_ragged_with_a_batch_index_column() -> None:
    # yolov7 ORT end2end: [X, 7] = batch_id, x0, y0, x1, y1, cls, score.
    rows = np.array([[2, 100, 36, 140, 56, 0, 0.8], [0, 290, 70, 310, 90, 1, 0.6], [2, 1, 1, 2, 2, 1, 0.1]])
    post = _ragged(packed_output="out", columns=["batch_index", "x1", "y1", "x2", "y2", "label", "score"])
    d0, d1, d2 = decode({"out": rows}, post, IDS, geometry=[TOP_LEFT] * 3)
    _assert(d0, [[217.5, 52.5, 232.5, 67.5]], [0.6], [3])
    assert len(d1) == 0  # no rows for image 1
    _assert(d2, [[75, 27, 105, 42]], [0.8], [1])  # its second row is below the threshold
    # Without a batch size the batch ends at the last image with a row.
    assert len(decode({"out": rows}, post, IDS)) == 3
    assert len(decode({"out": rows}, post, IDS, batch_size=4)) == 4


# --------------------------------------------------------------------------- heatmap

DEMO = Path(__file__).resolve().parents[2] / "demo" / "bundles" / "candidate" / "contract.yaml"


def test_heatmap_is_todays_decode_then_the_inverse_geometry() -> None:
    contract = Contract.model_validate(yaml.safe_load(DEMO.read_text()))  # a v1 contract
    rng = np.random.default_rng(0)
    outputs = {
        "heatmap": rng.normal(-3, 2, (2, 3, 24, 96)).astype(np.float32),
        "box_size": rng.uniform(4, 30, (2, 2, 24, 96)).astype(np.float32),
        "offset": rng.uniform(0, 1, (2, 2, 24, 96)).astype(np.float32),
    }
    today = postprocess.decode(outputs, contract.postprocess, contract.class_ids)
    plain = decode(outputs, contract)
    assert sum(len(d) for d in today) > 10
    for a, b in zip(today, plain, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
        np.testing.assert_array_equal(a.category_ids, b.category_ids)
    # A 192x768 source stretched into 96x384: every box doubles.
    big = placement((192, 768), (96, 384), "stretch")
    for a, b in zip(today, decode(outputs, contract, geometry=big), strict=True):
        np.testing.assert_allclose(b.boxes, a.boxes * 2, rtol=1e-6)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_heatmap_single_peak_hand_computed_through_a_letterbox() -> None:
    contract = Contract.model_validate(yaml.safe_load(DEMO.read_text()))
    heat = np.full((1, 3, 24, 96), -20.0, np.float32)
    heat[0, 2, 10, 30] = 3.0
    size = np.zeros((1, 2, 24, 96), np.float32)
    size[0, :, 10, 30] = [16, 8]
    offset = np.zeros((1, 2, 24, 96), np.float32)
    offset[0, :, 10, 30] = [0.5, 0.25]
    # centre (30.5 * 4, 10.25 * 4) = (122, 41); box [114, 37, 130, 45] in the 96x384 input.
    # A 48x384 source letterboxed (centre) into 96x384: r = 1, 24 rows on top.
    g = placement((48, 384), (96, 384), "letterbox", "center")
    (d,) = decode({"heatmap": heat, "box_size": size, "offset": offset}, contract, geometry=g)
    _assert(d, [[114, 13, 130, 21]], [1 / (1 + np.exp(-3))], [3])


def test_decode_needs_class_ids_without_a_contract() -> None:
    with pytest.raises(ValueError, match="class ids"):
        decode({"out": CANDIDATES[None]}, _dense())
