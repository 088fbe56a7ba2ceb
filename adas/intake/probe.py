"""Does the model's real output say what its contract declares? Checked on a probe batch.

A contract can be consistent on paper and still describe another model: a ``dense`` output
whose feature and candidate axes are swapped, boxes normalized to 0-1 declared as pixels (or the
reverse), class labels beyond the class count, padding rows marked otherwise than declared.
Intake runs the model (in the sandbox) on a few real-looking frames, frames of flat-coloured
vehicle-sized rectangles on a road-grey background placed in the input as the contract's
``input`` says (letterbox bands included), and reads the raw outputs per kind. Each refusal
names the contract field and what the model actually produced.

numpy only: the worker runs this beside the candidate, and intake sits below the detector
package in the layering, so the few lines of normalization are spelled out here.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from adas.intake.contract import (
    CONTRACT_FILE,
    Contract,
    DensePostprocess,
    DetectionsPostprocess,
    QueriesPostprocess,
    RaggedPostprocess,
)
from adas.intake.files import BundleRejected

PROBE_FRAMES = 4
# The source frames' size (the golden dataset's); a letterbox input shows its padding bands.
SOURCE_HW = (96, 384)
# Box values of a pixel-space output reach far beyond 1 on these frames; normalized ones stay
# within [0, 1] up to the small overshoot of boxes at the frame edge.
NORMALIZED_MAX = 1.5
_PROBABILITY_SLACK = 1e-3


def _content_box(contract: Contract) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the source frame inside the input."""
    ih, iw = contract.input.height_width
    if contract.input.resize == "stretch":
        return 0, 0, ih, iw
    h, w = SOURCE_HW
    r = min(ih / h, iw / w)
    rh, rw = min(ih, max(1, round(h * r))), min(iw, max(1, round(w * r)))
    letterbox = contract.input.letterbox
    if letterbox is not None and letterbox.placement == "top_left":
        return 0, 0, rh, rw
    return (ih - rh) // 2, (iw - rw) // 2, rh, rw


def probe_frames(contract: Contract, n: int = PROBE_FRAMES, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames [n, H, W, 3] at the model's input size: a grey road with lane marks and
    a few vehicle-sized rectangles, placed as the contract's resize says (pad value outside)."""
    ih, iw = contract.input.height_width
    pad = contract.input.letterbox.pad_value if contract.input.letterbox is not None else 0
    top, left, h, w = _content_box(contract)
    rng = np.random.default_rng(seed)
    frames = np.full((n, ih, iw, 3), pad, np.uint8)
    for frame in frames:
        road = frame[top : top + h, left : left + w]
        road[:] = rng.integers(70, 110)
        road[h // 3 : h // 3 + max(1, h // 60), :: max(2, w // 24)] = 220
        for _ in range(rng.integers(3, 7)):
            bh, bw = max(2, int(h * rng.uniform(0.08, 0.2))), max(4, int(w * rng.uniform(0.04, 0.12)))
            y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
            road[y : y + bh, x : x + bw] = rng.integers(0, 256, 3)
    return frames


def probe_batch(contract: Contract, n: int = PROBE_FRAMES, seed: int = 0) -> np.ndarray:
    """The probe frames as the model's input tensor: ``(pixel * scale - mean) / std`` in the
    model's channel order (as ``adas.detector.preprocess.normalize`` does)."""
    frames = probe_frames(contract, n, seed)
    spec = contract.input
    if spec.color == "BGR":
        frames = frames[..., ::-1]
    norm = spec.normalization
    mean = np.asarray(norm.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(norm.std, np.float32).reshape(1, 3, 1, 1)
    x = frames.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(norm.scale)
    return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


def _field(name: str) -> str:
    return f"{CONTRACT_FILE}: postprocess.{name}"


def _check_coordinates(boxes: np.ndarray, coordinates: str, field: str, contract: Contract) -> None:
    """Box values of a declared space against what the model produced on the probe."""
    if boxes.size == 0:
        return
    top = float(np.max(np.abs(boxes)))
    ih, iw = contract.input.height_width
    if coordinates == "normalized" and top > NORMALIZED_MAX:
        raise BundleRejected(
            _field(field),
            f"declares normalized boxes, but the model's box values reach {top:.4g} on the probe "
            f"frames (pixels of the {ih}x{iw} input?)",
        )
    if coordinates != "normalized" and top <= NORMALIZED_MAX and max(ih, iw) > 8 * NORMALIZED_MAX:
        raise BundleRejected(
            _field(field),
            f"declares {coordinates} boxes, but every box value the model produced on the probe "
            f"frames is within [0, {top:.3g}]: the boxes look normalized (coordinates: normalized)",
        )


def _check_probabilities(scores: np.ndarray, field: str, what: str) -> None:
    if scores.size and (scores.min() < -_PROBABILITY_SLACK or scores.max() > 1 + _PROBABILITY_SLACK):
        raise BundleRejected(
            _field(field),
            f"declares {what}, but the model's score values span [{scores.min():.4g}, {scores.max():.4g}] "
            "on the probe frames (logits?)",
        )


def _dense(outputs: Mapping[str, np.ndarray], post: DensePostprocess, contract: Contract) -> None:
    out = np.asarray(outputs[post.output], np.float32)
    want = 4 + int(post.objectness) + post.label_map.label_columns(contract.class_ids)
    feature_axis = 2 if post.layout == "BNF" else 1
    other = 1 if feature_axis == 2 else 2
    if out.shape[feature_axis] != want:
        swapped = "BFN" if post.layout == "BNF" else "BNF"
        hint = f"; axis {other} has {want}: layout {swapped}?" if out.shape[other] == want else ""
        raise BundleRejected(
            _field("layout"),
            f"{post.layout} puts the features on axis {feature_axis}, but the model's {post.output!r} "
            f"{list(out.shape)} has {out.shape[feature_axis]} there, not the {want} of 4 box"
            f"{' + objectness' if post.objectness else ''} + {want - 4 - int(post.objectness)} class "
            f"columns{hint}",
        )
    rows = out if post.layout == "BNF" else out.transpose(0, 2, 1)
    _check_coordinates(rows[..., :4], post.coordinates, "coordinates", contract)
    if post.scores == "probabilities":
        _check_probabilities(rows[..., 4:], "scores", "scores: probabilities")


def _queries(outputs: Mapping[str, np.ndarray], post: QueriesPostprocess, contract: Contract) -> None:
    scores = np.asarray(outputs[post.scores_output], np.float32)
    if post.boxes_output is None:
        boxes, scores = scores[..., :4], scores[..., 4:]
    else:
        boxes = np.asarray(outputs[post.boxes_output], np.float32)
    _check_coordinates(
        boxes, "normalized", "boxes_output" if post.boxes_output else "scores_output", contract
    )
    if post.activation == "none":
        _check_probabilities(scores, "activation", "activation: none (probabilities)")


def _rows(
    outputs: Mapping[str, np.ndarray], post: DetectionsPostprocess | RaggedPostprocess
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [..., 4], scores [...], labels [...]) of the row outputs."""
    if post.packed_output is not None:
        packed = np.asarray(outputs[post.packed_output], np.float32)
        col = {c: i for i, c in enumerate(post.columns)}
        if packed.shape[-1] != len(post.columns):
            raise BundleRejected(
                _field("columns"),
                f"declares {len(post.columns)} columns {list(post.columns)}, the model's "
                f"{post.packed_output!r} rows have {packed.shape[-1]} values",
            )
        boxes = packed[..., [col["x1"], col["y1"], col["x2"], col["y2"]]]
        return boxes, packed[..., col["score"]], packed[..., col["label"]]
    assert post.boxes_output and post.scores_output and post.labels_output  # the contract says so
    return (
        np.asarray(outputs[post.boxes_output], np.float32),
        np.asarray(outputs[post.scores_output], np.float32),
        np.asarray(outputs[post.labels_output]).astype(np.float64),
    )


def _check_labels(
    labels: np.ndarray, post: DetectionsPostprocess | RaggedPostprocess, contract: Contract
) -> None:
    if labels.size == 0:
        return
    columns = post.label_map.label_columns(contract.class_ids)
    top = float(labels.max())
    if top >= columns:
        raise BundleRejected(
            _field("label_map"),
            f"the model produced label {top:g} on the probe frames, but {len(contract.classes)} classes "
            f"under label_map {post.label_map.mode} (background_offset {post.label_map.background_offset}) "
            f"allow labels below {columns}",
        )
    if not np.all(labels == np.round(labels)):
        raise BundleRejected(
            _field("columns"), "the label column holds non-integer values on the probe frames"
        )


def _detections(outputs: Mapping[str, np.ndarray], post: DetectionsPostprocess, contract: Contract) -> None:
    boxes, scores, labels = _rows(outputs, post)
    k = scores.shape[1]
    valid = np.ones(scores.shape, bool)
    if post.num_detections_output is not None:
        counts = np.asarray(outputs[post.num_detections_output]).reshape(-1)
        if counts.size != scores.shape[0] or counts.min() < 0 or counts.max() > k:
            raise BundleRejected(
                _field("num_detections_output"),
                f"holds {counts.tolist()[:8]} for a batch of {scores.shape[0]} with {k} rows each",
            )
        valid = np.arange(k)[None, :] < counts[:, None]
    negative = labels < 0
    if post.padding == "zero_score" and negative.any():
        raise BundleRejected(
            _field("padding"),
            f"zero_score, but {int(negative.sum())} rows the model produced have label -1 "
            f"(padding: negative_label?) and {int((scores == 0).sum())} have score 0",
        )
    if post.padding == "negative_label":
        zero = (scores == 0) & ~negative
        if zero.any() and not negative.any():
            raise BundleRejected(
                _field("padding"),
                f"negative_label, but no row the model produced has label -1 while {int(zero.sum())} "
                "rows have score 0 (padding: zero_score?)",
            )
        valid &= ~negative
    elif post.padding == "zero_score":
        valid &= scores != 0
    _check_labels(labels[valid], post, contract)
    _check_probabilities(scores[valid], "packed_output" if post.packed_output else "scores_output", "scores")
    if post.coordinates != "source_pixels":
        _check_coordinates(boxes[valid], post.coordinates, "coordinates", contract)


def _ragged(
    outputs: Mapping[str, np.ndarray], post: RaggedPostprocess, contract: Contract, batch: int
) -> None:
    boxes, scores, labels = _rows(outputs, post)
    if post.count_output is not None:
        counts = np.asarray(outputs[post.count_output]).reshape(-1)
        if counts.size != batch or counts.min() < 0 or int(counts.sum()) != len(scores):
            raise BundleRejected(
                _field("count_output"),
                f"holds {counts.tolist()[:8]} for a batch of {batch}, the model produced {len(scores)} rows",
            )
    _check_labels(labels, post, contract)
    if post.coordinates != "source_pixels":
        _check_coordinates(boxes, post.coordinates, "coordinates", contract)


def check_probe_outputs(outputs: Mapping[str, np.ndarray], contract: Contract, batch: int) -> None:
    """Refuse, naming the field, a contract whose declared layout, box space, class columns or
    padding the model's outputs on the probe batch contradict."""
    post = contract.postprocess
    if isinstance(post, DensePostprocess):
        _dense(outputs, post, contract)
    elif isinstance(post, QueriesPostprocess):
        _queries(outputs, post, contract)
    elif isinstance(post, DetectionsPostprocess):
        _detections(outputs, post, contract)
    elif isinstance(post, RaggedPostprocess):
        _ragged(outputs, post, contract, batch)
    # heatmap: the contract's shape checks (stride x heatmap size = input) cover its layout.
