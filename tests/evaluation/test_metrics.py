"""Domain metrics: engine predictions, COCO numbers (faster-coco-eval == pycocotools), PR curves,
confusion matrix, calibration, OOD scores, corruptions, sensor faults and temporal stress."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from adas.detector.coco_metrics import (
    STAT_NAMES,
    _dt_dataset,
    _prepared_dets,
    _prepared_gt,
    _run,
    coco_metrics,
)
from adas.detector.postprocess import Detections
from adas.evaluation import corruptions, sensor_faults
from adas.evaluation import robustness as rob
from adas.evaluation.calibration import best_f1_threshold, calibration_report, plot_reliability
from adas.evaluation.matching import MatchedDetections, confusion_matrix, match_same_class
from adas.evaluation.ood import aupr, auroc, ood_probe_frames, ood_report
from adas.evaluation.primary import evaluate_primary, plot_confusion, plot_pr_curves, pr_curves
from adas.evaluation.runner import (
    MaskedEngine,
    Predictions,
    fog_mask,
    open_engine,
    predict,
    predict_fn,
)

from .synthetic import make_split, predictions_from_gt

CATS = [{"id": 1, "name": "car"}, {"id": 2, "name": "truck"}, {"id": 3, "name": "motorcycle"}]


@pytest.fixture(scope="module")
def frames_case() -> tuple[dict[str, Any], np.ndarray]:
    coco, frames = make_split("golden_test", 6, 2, 3000, seed=5)
    return coco, np.stack(frames)


@pytest.fixture(scope="module")
def noisy_predictions(onnx_engines, frames_case):  # type: ignore[no-untyped-def]
    coco, frames = frames_case
    e = onnx_engines["noisy"]
    engine = open_engine(e.path, "onnxruntime", e.contract)
    return predict(
        engine, frames, [im["id"] for im in coco["images"]], e.contract, score_threshold=0.05, batch_size=5
    )


def test_engine_predictions_and_roundtrip(noisy_predictions: Predictions, frames_case) -> None:  # type: ignore[no-untyped-def]
    coco, _ = frames_case
    p = noisy_predictions
    assert len(p) == len(coco["images"]) and p.image_ids == [im["id"] for im in coco["images"]]
    assert sum(len(d) for d in p.detections) > 0  # the untrained head scores every cell ~0.1
    assert np.all((p.max_score > 0) & (p.max_score < 1)) and np.all(np.isfinite(p.energy))
    back = Predictions.from_json(p.to_json())
    assert back.image_ids == p.image_ids
    # Exactly the detections evaluated: a reader of predictions.json recomputes the report's numbers.
    assert back.records() == p.records()
    sub = p.subset([p.image_ids[3], p.image_ids[1], 999999])
    assert sub.image_ids == [p.image_ids[3], p.image_ids[1]]


def test_faster_coco_eval_equals_pycocotools_on_engine_detections(
    noisy_predictions: Predictions, frames_case
) -> None:  # type: ignore[no-untyped-def]
    """The same detections through both libraries: every number and every PR curve point equal."""
    coco, _ = frames_case
    # Engine detections plus near-GT ones so that AP is far from 0 and the curves are non-trivial.
    good = predictions_from_gt(coco, seed=3, recall=0.8)
    records = noisy_predictions.records() + [r for i, d in good.items() for r in d.to_coco(i)]
    fast = coco_metrics(coco, records, backend="faster")
    ref = coco_metrics(coco, records, backend="pycocotools")
    for k in STAT_NAMES:
        assert fast[k] == pytest.approx(ref[k], abs=1e-12), k
    assert fast["per_class_AP"] == pytest.approx(ref["per_class_AP"], abs=1e-12)
    assert 0.2 < fast["AP50"] < 1.0
    g = _prepared_gt(coco, None)
    dets = _prepared_dets(records, {im["id"] for im in g["images"]}, {1, 2, 3})
    _, p_fast, _ = _run(g, _dt_dataset(g, dets), "faster")
    _, p_ref, _ = _run(g, _dt_dataset(g, dets), "pycocotools")
    np.testing.assert_allclose(p_fast, p_ref, atol=1e-12)
    curves = pr_curves(coco, records)
    np.testing.assert_allclose(curves["car"]["iou50"], np.clip(p_ref[0, :, 0, 0, -1], 0, 1), atol=1e-4)


def test_primary_with_perfect_detections_and_plots(frames_case) -> None:  # type: ignore[no-untyped-def]
    coco, _ = frames_case
    records = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
        for a in coco["annotations"]
    ]
    ids = [im["id"] for im in coco["images"]]
    res = evaluate_primary(coco, records, ids, operating_threshold=0.3)
    assert res.metrics["AP"] == pytest.approx(1.0)
    cm = res.confusion
    n = [sum(1 for a in coco["annotations"] if a["category_id"] == c) for c in (1, 2, 3)]
    assert cm[:3, :3].diagonal().tolist() == n and cm[:, 3].sum() == 0 and cm[3].sum() == 0
    for png in (plot_pr_curves(res, "t"), plot_confusion(res, "t")):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert res.to_json()["confusion_matrix"]["labels"][-1] == "background/missed"


def test_confusion_matrix_hand_case() -> None:
    gt = {
        "images": [{"id": 1, "width": 384, "height": 96}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 16, 7]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [100, 40, 30, 9]},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [200, 40, 8, 4]},
        ],
        "categories": CATS,
    }
    recs = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 16, 7], "score": 0.9},  # car -> car
        {"image_id": 1, "category_id": 1, "bbox": [100, 40, 30, 9], "score": 0.8},  # truck -> car
        {"image_id": 1, "category_id": 2, "bbox": [300, 10, 30, 9], "score": 0.7},  # background -> truck
        {"image_id": 1, "category_id": 3, "bbox": [200, 40, 8, 4], "score": 0.1},  # below threshold
    ]
    cm = confusion_matrix(gt, recs, [1], [1, 2, 3], score_threshold=0.3)
    expected = np.zeros((4, 4), int)
    expected[0, 0] = expected[1, 0] = expected[3, 1] = expected[2, 3] = 1
    np.testing.assert_array_equal(cm, expected)
    m = match_same_class(gt, recs, [1])
    assert m.tp.tolist() == [True, False, False, True] and m.gt_per_class == {1: 1, 2: 1, 3: 1}


def test_calibration_hand_computed() -> None:
    # Two bins used: 0.9 (2 TP of 2) and 0.3 (1 TP of 4).
    scores = np.array([0.9, 0.9, 0.3, 0.3, 0.3, 0.3])
    tp = np.array([1, 1, 1, 0, 0, 0], bool)
    m = MatchedDetections(
        np.zeros(6, int), scores, np.ones(6, int), tp, np.full(6, 0.05), np.full(6, 0.1), {1: 4, 2: 0}
    )
    r = calibration_report(
        m, {1: "car", 2: "truck"}, bins=10, dece_bins={"confidence": 10, "width": 1, "height": 1}
    )
    assert r["ece"] == pytest.approx(2 / 6 * 0.1 + 4 / 6 * 0.05)
    assert r["dece"] == pytest.approx(r["ece"])  # one geometry bin: D-ECE reduces to ECE
    assert r["brier"] == pytest.approx((2 * 0.01 + 0.49 + 3 * 0.09) / 6)
    assert r["per_class"]["truck"]["recommended_threshold"]["threshold"] is None
    assert "no ground truth" in r["per_class"]["truck"]["recommended_threshold"]["reason"]
    # F1 at 0.9: P=1, R=2/4 -> .667; at 0.3: P=.5, R=.75 -> .6. Best is 0.9.
    best = best_f1_threshold(scores, tp, 4)
    assert best["threshold"] == pytest.approx(0.9) and best["f1"] == pytest.approx(2 / 3)
    empty = MatchedDetections(*(np.zeros(0) for _ in range(6)), {1: 3})  # type: ignore[arg-type]
    r0 = calibration_report(empty, {1: "car"})
    assert r0["ece"] is None and r0["brier"] is None and "no detections" in r0["note"]
    assert plot_reliability(r, "t")[:4] == b"\x89PNG" and plot_reliability(r0, "t")[:4] == b"\x89PNG"


def test_auroc_aupr_known_values() -> None:
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    # pos {0.9, 0.4}, neg {0.6}: ranking .9(+) .6(-) .4(+) -> AP = .5*1 + .5*(2/3)
    assert aupr(np.array([0.9, 0.4]), np.array([0.6])) == pytest.approx(0.5 + 1 / 3)
    assert auroc(np.array([]), np.array([1.0])) is None


def test_ood_probes_and_report(onnx_engines) -> None:  # type: ignore[no-untyped-def]
    frames, kinds = ood_probe_frames(8, (96, 384), seed=7)
    again, _ = ood_probe_frames(8, (96, 384), seed=7)
    assert frames.shape == (8, 96, 384, 3) and frames.dtype == np.uint8 and np.array_equal(frames, again)
    assert set(kinds) == {"unseen_objects", "vegetation", "water", "pattern"}
    e = onnx_engines["noisy"]
    p = predict(
        open_engine(e.path, "onnxruntime", e.contract),
        frames,
        list(range(8)),
        e.contract,
        score_threshold=0.05,
    )
    # In-distribution scores set apart on purpose: separation is perfect by construction.
    r = ood_report(
        p.max_score + 1, p.energy - 100, p.detections, p.max_score, p.energy, p.detections, kinds, 0.3
    )
    assert r["auroc_msp"] == 1.0 and r["auroc_energy"] == 1.0 and r["aupr_msp"] == 1.0
    assert set(r["per_kind"]) == set(kinds) and r["abstention"]["ood_frames_with_confident_detection"] == 0.0


def test_masked_engine_is_blind_in_fog(onnx_engines, frames_case) -> None:  # type: ignore[no-untyped-def]
    coco, frames = frames_case
    e = onnx_engines["noisy"]
    inner = open_engine(e.path, "onnxruntime", e.contract)
    blind = MaskedEngine(inner, fog_mask(e.contract.input.normalization), "heatmap")
    ids = [im["id"] for im in coco["images"]]
    p = predict(blind, frames, ids, e.contract, score_threshold=0.05)
    fog = [im["weather"] == "fog" for im in coco["images"]]
    assert any(fog)
    for is_fog, d in zip(fog, p.detections, strict=True):
        assert (len(d) == 0) == is_fog


def _damage(name: str, a: np.ndarray, b: np.ndarray) -> float:
    if name == "frost":  # COCO-C's frost brightens most at severity 1: compare structure instead
        za = (a.astype(float) - a.mean()) / a.std()
        zb = (b.astype(float) - b.mean()) / max(b.std(), 1e-9)
        return float(np.abs(za - zb).mean())
    return float(np.abs(a.astype(float) - b).mean())


def test_corruptions_are_deterministic_and_monotone(frames_case) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    img = np.full((96, 384, 3), 100, np.uint8)
    for _ in range(12):
        x, y = rng.integers(0, 360), rng.integers(0, 88)
        img[y : y + 7, x : x + 16] = rng.integers(0, 255, 3)
    for name in corruptions.CORRUPTIONS:
        a = corruptions.corrupt(img, name, 3, np.random.default_rng(1))
        b = corruptions.corrupt(img, name, 3, np.random.default_rng(1))
        assert a.shape == img.shape and a.dtype == np.uint8 and np.array_equal(a, b), name
        if name == "jpeg_compression":
            continue  # checked against PIL below: on flat frames low quality can look closer
        diffs = [
            _damage(name, img, corruptions.corrupt(img, name, s, np.random.default_rng(1))) for s in (1, 5)
        ]
        assert diffs[1] > diffs[0] > 0, name
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=7)
    expected = np.asarray(Image.open(buf).convert("RGB"))
    assert np.abs(corruptions.corrupt(img, "jpeg_compression", 5, rng).astype(int) - expected).max() <= 1
    del frames_case
    assert set(corruptions.CATEGORY.values()) == {"noise", "blur", "weather", "digital"}
    assert {n for n, c in corruptions.CATEGORY.items() if c == "weather"} == {
        "snow",
        "frost",
        "fog",
        "brightness",
    }
    with pytest.raises(ValueError, match="unknown corruption"):
        corruptions.corrupt(img, "zoom_blur", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="severity"):
        corruptions.corrupt(img, "fog", 6, np.random.default_rng(0))


def test_robustness_sweep_metrics(frames_case) -> None:  # type: ignore[no-untyped-def]
    coco, frames = frames_case
    ids = [im["id"] for im in coco["images"]]
    gt_dets = predictions_from_gt(coco, seed=0, recall=1.0, jitter=0.0, fp_per_image=0.0)
    clean_std = frames.reshape(len(frames), -1).std(axis=1)

    def contrast_sensitive(batch: np.ndarray) -> list[Detections]:
        # Sees everything while a frame keeps most of its contrast, nothing below.
        stds = batch.reshape(len(batch), -1).std(axis=1)
        return [gt_dets[ids[i]] if s > 0.6 * clean_std[i] else Detections.empty() for i, s in enumerate(stds)]

    r = corruptions.robustness_sweep(
        contrast_sensitive, frames, ids, coco, ["contrast", "gaussian_noise"], [1, 3, 5]
    )
    assert r["clean"]["AP"] == pytest.approx(1.0)
    contrast, noise = r["corruptions"]["contrast"]["AP"], r["corruptions"]["gaussian_noise"]["AP"]
    assert contrast[1:] == [0.0, 0.0] and contrast[0] < 0.2  # contrast x0.3 and below: blind
    assert noise[0] == pytest.approx(1.0)  # noise raises the std: still "sees"
    assert r["mPC"] == pytest.approx(np.mean(contrast + noise)) and r["rPC"] == pytest.approx(r["mPC"])
    assert r["corruptions"]["contrast"]["decay_slope_AP_per_severity"] <= 0
    assert r["worst_corruptions"][0] == "contrast" and r["mPC_by_category"].keys() == {"digital", "noise"}
    assert corruptions.decay_slope([1, 2, 3], [0.9, 0.7, 0.5]) == pytest.approx(-0.2)
    assert corruptions.decay_slope([1, 2], [None, 0.5]) is None
    png = corruptions.plot_decay(r, "t")
    assert png[:4] == b"\x89PNG"


def test_sensor_faults(onnx_engines) -> None:  # type: ignore[no-untyped-def]
    e = onnx_engines["noisy"]
    inner = open_engine(e.path, "onnxruntime", e.contract)
    safe = sensor_faults.sensor_fault_check(
        predict_fn(inner, e.contract, 0.05), (96, 384), sensor_faults.SENSOR_FAULTS, 2, 0.3
    )
    assert safe["passed"] and all(f["confident_detections"] == 0 for f in safe["faults"].values())

    class Hallucinating:
        """Fires confidently on flat frames (a real failure mode of over-confident heads)."""

        def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
            outs = dict(inner.run(x, source_hw))
            flat = x.reshape(len(x), -1).std(axis=1) < 1e-3
            heat = outs["heatmap"].copy()
            heat[flat, :, 5, 10] = 8.0
            outs["heatmap"] = heat
            return outs

    bad = sensor_faults.sensor_fault_check(
        predict_fn(Hallucinating(), e.contract, 0.05), (96, 384), sensor_faults.SENSOR_FAULTS, 2, 0.3
    )
    assert not bad["passed"] and bad["failing"] == ["black", "white", "grey"]
    assert bad["faults"]["black"]["max_score"] > 0.99


def test_temporal_stress_with_tracker() -> None:
    replay, _ = make_split("replay", 3, 10, 5000, seed=11, frame_interval_s=0.2, with_frames=False)
    replay["sequences"] = [
        {"sequence_id": sid, "image_ids": [im["id"] for im in replay["images"] if im["scene_id"] == sid]}
        for sid in dict.fromkeys(im["scene_id"] for im in replay["images"])
    ]
    dets = predictions_from_gt(replay, seed=0, recall=1.0, jitter=0.0, fp_per_image=0.0)
    # Motorcycles are 8 px long and move up to 6 px a frame: a low IoU gate keeps them.
    r = rob.temporal_stress(
        replay, dets, 0.3, drop_probability=0.3, out_of_order_batch=4, tracker_iou=0.1, seed=0
    )
    c = r["conditions"]
    assert c["nominal"]["continuity"] == pytest.approx(1.0) and c["nominal"]["id_switches"] == 0
    assert c["nominal"]["coverage"] == pytest.approx(1.0)
    # A 2-frame blank: tracks survive (max_age 2) and pick their objects up again afterwards.
    assert c["blanked_segment"]["pairs"] < c["nominal"]["pairs"] and c["blanked_segment"]["continuity"] == 1.0
    assert r["ghost_detections_in_blanked_segment"] == 0
    forgetful = rob.temporal_stress(replay, dets, 0.3, tracker_iou=0.1, tracker_max_age=0, seed=0)
    blanked = forgetful["conditions"]["blanked_segment"]
    assert (
        blanked["id_switches"] > 0 and blanked["continuity"] < 1.0 and blanked["continuity_vs_nominal"] < 1.0
    )
    assert c["out_of_order"]["continuity"] <= 1.0 and c["dropped_frames"]["pairs"] < c["nominal"]["pairs"]
    for cond in c.values():
        assert cond["continuity_vs_nominal"] is not None
    # No detections at all: continuity undefined, reported as such.
    none = {i: Detections.empty() for i in dets}
    r0 = rob.temporal_stress(replay, none, 0.3)
    assert r0["conditions"]["nominal"]["continuity"] == 0.0 and r0["conditions"]["nominal"]["stable"] is None
    assert "undefined" in r0["note"]
