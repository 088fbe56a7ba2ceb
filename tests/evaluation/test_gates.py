"""Regression gates on constructed prediction sets: green for a better model, red (with the
right rationale) for a weaker one and for one blind in fog; edge cases never crash or NaN."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from adas.datasets.slices import load_slices
from adas.detector.postprocess import Detections
from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.gates import (
    GatesConfig,
    Latency,
    MetricsSnapshot,
    default_gates,
    evaluate_gates,
    load_gates,
    weighted_map,
)
from adas.evaluation.pipeline import detection_calibration, snapshot
from adas.evaluation.reports import blocking_report, json_bytes
from adas.evaluation.runner import Predictions
from adas.evaluation.slices import catalog_slices, slice_metrics, slice_table

from .synthetic import make_split, predictions_from_gt

LATENCY_OK = Latency(p95_ms=4.0, source="test", budget_p95_ms=25.0)


def _preds(coco: dict[str, Any], dets: dict[int, Detections]) -> Predictions:
    ids = [int(im["id"]) for im in coco["images"]]
    n = len(ids)
    return Predictions(ids, [dets[i] for i in ids], np.zeros(n), np.zeros(n))


def _evaluate(
    coco: dict[str, Any], dets: dict[int, Detections], version: str
) -> tuple[MetricsSnapshot, dict, Any]:
    preds = _preds(coco, dets)
    slices = catalog_slices(load_slices(), coco)
    per_slice = slice_metrics(coco, preds.records(), slices)
    cal = detection_calibration(coco, preds, preds.image_ids, default_evaluation_settings(), 0.3)
    return snapshot(version, per_slice, slices, cal), per_slice, slices


@pytest.fixture(scope="module")
def case() -> dict[str, Any]:
    coco, _ = make_split("golden_test", 60, 4, 3000, seed=0, with_frames=False)
    fog = {int(im["id"]) for im in coco["images"] if im["weather"] == "fog"}
    good = predictions_from_gt(coco, seed=1, recall=0.97, jitter=0.3, score_range=(0.85, 0.99))
    weak = predictions_from_gt(coco, seed=2, recall=0.80, jitter=0.6)
    degraded = {i: (Detections.empty() if i in fog else d) for i, d in good.items()}
    return {
        "coco": coco,
        "fog": fog,
        "good": _evaluate(coco, good, "1.3.0"),
        "weak": _evaluate(coco, weak, "1.2.0"),
        "degraded": _evaluate(coco, degraded, "1.3.1-fogblind"),
    }


def test_gates_yaml_is_versioned_and_valid() -> None:
    cfg = default_gates()
    assert cfg.version >= 1 and cfg.weighted_map.min_improvement_points == 1.5
    assert cfg.critical_slices.max_relative_regression == 0.02


def test_gates_yaml_errors_name_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from adas.config_errors import ConfigError

    bad = tmp_path / "gates.yaml"
    bad.write_text("version: 1\nweighted_map: {class_weights: {car: -1}}\n")
    with pytest.raises(ConfigError, match=r"weighted_map.class_weights: class weights must be > 0"):
        load_gates(bad)


def test_good_candidate_is_green(case: dict[str, Any]) -> None:
    good, weak = case["good"][0], case["weak"][0]
    v = evaluate_gates(good, weak, LATENCY_OK, 25.0)
    assert v.passed and v.verdict == "green", v.rationale
    assert [g.status for g in v.gates] == ["pass", "pass", "pass", "pass"]
    assert not v.failing_slices
    # The critical slices really were compared (not skipped as thin).
    assert "fog" in v.gates[1].rationale and "not gated" not in v.gates[1].rationale


def test_weaker_production_model_is_red(case: dict[str, Any]) -> None:
    """The bundled production model offered as a candidate: no improvement over production."""
    weak = case["weak"][0]
    v = evaluate_gates(weak, weak, LATENCY_OK, 25.0)
    assert not v.passed and v.verdict == "red"
    assert [g.name for g in v.failed] == ["weighted_map"]
    assert "misses the required +1.5" in v.rationale
    # And it is worse than the good model by far: as a candidate against it, red on slices too.
    v2 = evaluate_gates(weak, case["good"][0], LATENCY_OK, 25.0)
    assert {g.name for g in v2.failed} >= {"weighted_map", "critical_slices"}
    assert {f.slice for f in v2.failing_slices} >= {"fog", "night", "rain", "snow"}


def test_candidate_blind_in_fog_is_red_naming_fog(case: dict[str, Any]) -> None:
    degraded, weak = case["degraded"][0], case["weak"][0]
    assert degraded.slices["fog"].AP == 0.0 and weak.slices["fog"].AP and weak.slices["fog"].AP > 0.3
    v = evaluate_gates(degraded, weak, LATENCY_OK, 25.0)
    assert not v.passed
    assert "critical_slices" in [g.name for g in v.failed]
    assert [f.slice for f in v.failing_slices] == ["fog"]
    assert v.failing_slices[0].relative_change == pytest.approx(-1.0)
    assert "critical slice regression beyond 2%: fog" in v.rationale
    report = blocking_report(v, "test-detector 1.3.1 on x86-cpu/fp32")
    assert report.startswith("# BLOCKED") and "| fog |" in report and "data mining" in report


def test_latency_and_calibration_gates(case: dict[str, Any]) -> None:
    good, weak = case["good"][0], case["weak"][0]
    slow = Latency(p95_ms=31.5, source="test", budget_p95_ms=25.0)
    v = evaluate_gates(good, weak, slow, 25.0)
    assert [g.name for g in v.failed] == ["latency"] and "31.50 ms over the 25 ms budget" in v.rationale
    assert not evaluate_gates(good, weak, None, 25.0).passed  # unmeasured latency never passes
    worse_cal = good.model_copy(update={"ece": (weak.ece or 0) + 0.05})
    v = evaluate_gates(worse_cal, weak, LATENCY_OK, 25.0)
    assert [g.name for g in v.failed] == ["calibration"] and "beyond the +2 tolerance" in v.rationale


def test_missing_production_baseline(case: dict[str, Any]) -> None:
    good, weak = case["good"][0], case["weak"][0]
    v = evaluate_gates(good, None, LATENCY_OK, 25.0)
    assert v.passed and not v.baseline_available
    status = {g.name: g.status for g in v.gates}
    assert status == {
        "weighted_map": "pass",
        "critical_slices": "skipped",
        "latency": "pass",
        "calibration": "skipped",
    }
    assert "absolute floor" in v.gates[0].requirement and "No production baseline" in v.rationale
    # Without a baseline the absolute floor still catches a poor model.
    empty = {i: Detections.empty() for i in (int(im["id"]) for im in case["coco"]["images"])}
    poor = _evaluate(case["coco"], empty, "0.0.1")[0]
    assert not evaluate_gates(poor, None, LATENCY_OK, 25.0).passed
    blocking = GatesConfig.model_validate({**default_gates().model_dump(), "missing_baseline": "block"})
    vb = evaluate_gates(good, None, LATENCY_OK, 25.0, blocking)
    assert not vb.passed and "missing_baseline: block" in vb.rationale
    del weak


def test_empty_predictions_give_a_clear_red_report_without_nan(case: dict[str, Any]) -> None:
    coco = case["coco"]
    empty = {int(im["id"]): Detections.empty() for im in coco["images"]}
    snap, per_slice, slices = _evaluate(coco, empty, "0.0.1")
    assert snap.AP == 0.0 and snap.ece is None and snap.dece is None
    v = evaluate_gates(snap, case["weak"][0], LATENCY_OK, 25.0)
    assert not v.passed
    status = {g.name: g.status for g in v.gates}
    assert status["weighted_map"] == "fail" and status["critical_slices"] == "fail"
    assert status["calibration"] == "skipped" and "undefined for the candidate" in v.gates[3].rationale
    table = slice_table(coco, per_slice, slices, case["weak"][1])
    assert table["AP"].null_count() == 0 and not table["AP"].is_nan().any()
    json.loads(json_bytes({"verdict": v.model_dump(), "slices": table.to_dicts()}))  # allow_nan=False


def test_class_absent_from_ground_truth_is_left_out_by_name(case: dict[str, Any]) -> None:
    coco = dict(case["coco"])
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 3]
    good = predictions_from_gt(coco, seed=1, recall=0.97, jitter=0.3, score_range=(0.85, 0.99))
    weak = predictions_from_gt(coco, seed=2, recall=0.80, jitter=0.6)
    g, per_slice, _ = _evaluate(coco, good, "1.3.0")
    w = _evaluate(coco, weak, "1.2.0")[0]
    assert g.per_class_AP["motorcycle"] is None and per_slice["all"]["per_class_AP"]["motorcycle"] == -1.0
    v = evaluate_gates(g, w, LATENCY_OK, 25.0)
    assert v.passed
    assert "left out (no ground truth in the evaluated images): motorcycle" in v.gates[0].rationale
    assert weighted_map(g.per_class_AP, {"car": 1, "truck": 1, "motorcycle": 2}) == pytest.approx(
        (g.per_class_AP["car"] + g.per_class_AP["truck"]) / 2
    )


def test_thin_critical_slices_are_reported_not_gated(case: dict[str, Any]) -> None:
    coco, _ = make_split("golden_test", 6, 2, 3000, seed=3, with_frames=False)
    good = _evaluate(coco, predictions_from_gt(coco, seed=1, recall=0.97), "1.3.0")[0]
    weak = _evaluate(coco, predictions_from_gt(coco, seed=2, recall=0.5), "1.2.0")[0]
    v = evaluate_gates(good, weak, LATENCY_OK, 25.0)
    cs = v.gates[1]
    assert cs.status == "skipped" and "images < 30" in cs.rationale
