"""Regression gates on constructed prediction sets, decided on paired bootstrap intervals:
green for a better (or identical) model, red with the right rationale for a weaker one and for
one blind in fog, amber where the evidence cannot decide; edge cases never crash or NaN."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from adas.datasets.slices import load_slices
from adas.detector.postprocess import Detections
from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.evidence import PairedEvidence, paired_evidence
from adas.evaluation.gates import (
    GatesConfig,
    GateVerdict,
    Latency,
    MetricsSnapshot,
    default_gates,
    evaluate_gates,
    load_gates,
    weighted_map,
)
from adas.evaluation.pipeline import detection_calibration, snapshot
from adas.evaluation.reports import blocking_report, json_bytes, verdict_markdown
from adas.evaluation.runner import Predictions
from adas.evaluation.slices import SliceSpec, catalog_slices, slice_metrics, slice_table

from .synthetic import make_split, predictions_from_gt

LATENCY_OK = Latency(p95_ms=4.0, source="test", budget_p95_ms=25.0)
RESAMPLES = 400  # enough for stable 95% limits in these tests; the shipped default is 2,000


@dataclass(frozen=True)
class Model:
    snap: MetricsSnapshot
    per_slice: dict[str, Any]
    slices: list[SliceSpec]
    records: list[dict[str, Any]]
    coco: dict[str, Any]


def _preds(coco: dict[str, Any], dets: dict[int, Detections]) -> Predictions:
    ids = [int(im["id"]) for im in coco["images"]]
    n = len(ids)
    return Predictions(ids, [dets[i] for i in ids], np.zeros(n), np.zeros(n))


def _evaluate(coco: dict[str, Any], dets: dict[int, Detections], version: str) -> Model:
    preds = _preds(coco, dets)
    slices = catalog_slices(load_slices(), coco)
    per_slice = slice_metrics(coco, preds.records(), slices)
    cal = detection_calibration(coco, preds, preds.image_ids, default_evaluation_settings(), 0.3)
    return Model(snapshot(version, per_slice, slices, cal), per_slice, slices, preds.records(), coco)


def _evidence(cand: Model, prod: Model, cfg: GatesConfig | None = None) -> PairedEvidence:
    cfg = cfg or default_gates()
    ids = [int(im["id"]) for im in cand.coco["images"]]
    return paired_evidence(
        cand.coco,
        cand.records,
        prod.records,
        ids,
        {s.name: s.image_ids for s in cand.slices},
        class_weights=cfg.weighted_map.class_weights,
        recall_classes=cfg.safety_recall.classes,
        resamples=RESAMPLES,
        seed=cfg.confidence.seed,
    )


def _judge(
    cand: Model, prod: Model | None, latency: Latency | None = LATENCY_OK, cfg: GatesConfig | None = None
) -> GateVerdict:
    evidence = None if prod is None else _evidence(cand, prod, cfg)
    return evaluate_gates(
        cand.snap, None if prod is None else prod.snap, latency, 25.0, cfg, evidence=evidence
    )


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
    assert cfg.version >= 2 and cfg.weighted_map.max_regression_points == 1.0
    assert cfg.critical_slices.max_relative_regression == 0.02
    assert (cfg.confidence.level, cfg.confidence.resamples) == (0.95, 2000)


def test_gates_yaml_errors_name_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from adas.config_errors import ConfigError

    bad = tmp_path / "gates.yaml"
    bad.write_text("version: 1\nweighted_map: {class_weights: {car: -1}}\n")
    with pytest.raises(ConfigError, match=r"weighted_map.class_weights: class weights must be > 0"):
        load_gates(bad)


def test_good_candidate_is_green(case: dict[str, Any]) -> None:
    v = _judge(case["good"], case["weak"])
    assert v.passed and v.verdict == "green", v.rationale
    assert [g.status for g in v.gates] == ["pass", "pass", "pass", "pass", "pass"]
    assert not v.failing_slices and not v.amber
    # The critical slices really were compared, each on its own interval.
    assert {d.scope for d in v.decisions if d.gate == "critical_slices"} >= {"fog", "night", "rain", "snow"}
    # Every AP and recall delta is an improvement the interval shows (calibration error: lower).
    assert all(d.delta is not None and d.delta.low > 0 for d in v.decisions if d.higher_is_better)
    assert "[" in (v.gates[0].interval or "") and "(n = 240)" in (v.gates[0].interval or "")


def test_identical_models_give_zero_deltas_and_a_green_verdict(case: dict[str, Any]) -> None:
    weak = case["weak"]
    v = _judge(weak, weak)
    assert v.verdict == "green", v.rationale
    for d in v.decisions:
        assert d.delta is not None and (d.delta.point, d.delta.low, d.delta.high) == (0.0, 0.0, 0.0)
    assert "+0.00 [+0.00, +0.00] (n = 240)" in v.gates[0].observed


def test_weaker_model_is_red_with_intervals_excluding_zero(case: dict[str, Any]) -> None:
    """The weak model as a candidate against the good one: red overall and on every slice."""
    v = _judge(case["weak"], case["good"])
    assert not v.passed and v.verdict == "red"
    assert {g.name for g in v.failed} >= {"weighted_map", "critical_slices", "safety_recall"}
    assert {f.slice for f in v.failing_slices} >= {"fog", "night", "rain", "snow"}
    wm = next(d for d in v.decisions if d.gate == "weighted_map")
    assert wm.delta is not None and wm.delta.high < 0  # the interval excludes 0
    assert "is worse than the tolerance 1.00 pts" in v.rationale


def test_a_required_improvement_is_red_for_an_identical_model(case: dict[str, Any]) -> None:
    """``min_improvement_points`` (the specification's "+1.5" win condition) needs the whole
    interval at or above the improvement: an identical model shows none."""
    cfg = GatesConfig.model_validate(
        {
            **default_gates().model_dump(),
            "weighted_map": {**default_gates().weighted_map.model_dump(), "min_improvement_points": 1.5},
        }
    )
    v = _judge(case["weak"], case["weak"], cfg=cfg)
    assert [g.name for g in v.failed] == ["weighted_map"]
    assert "delta >= +1.5 pts" in v.gates[0].requirement
    assert _judge(case["good"], case["weak"], cfg=cfg).verdict == "green"


def test_candidate_blind_in_fog_is_red_naming_fog(case: dict[str, Any]) -> None:
    degraded, weak = case["degraded"].snap, case["weak"].snap
    assert degraded.slices["fog"].AP == 0.0 and weak.slices["fog"].AP and weak.slices["fog"].AP > 0.3
    v = _judge(case["degraded"], case["weak"])
    assert not v.passed
    assert "critical_slices" in [g.name for g in v.failed]
    assert [f.slice for f in v.failing_slices] == ["fog"]
    assert v.failing_slices[0].relative_change == pytest.approx(-1.0)
    assert "critical slice regression beyond 2%: fog AP delta" in v.rationale
    report = blocking_report(v, "test-detector 1.3.1 on x86-cpu/fp32")
    assert report.startswith("# BLOCKED") and "| fog |" in report and "data mining" in report


def test_latency_and_calibration_gates(case: dict[str, Any]) -> None:
    good, weak = case["good"], case["weak"]
    evidence = _evidence(good, weak)
    slow = Latency(p95_ms=31.5, source="test", budget_p95_ms=25.0)
    v = evaluate_gates(good.snap, weak.snap, slow, 25.0, evidence=evidence)
    assert [g.name for g in v.failed] == ["latency"] and "31.50 ms over the 25 ms budget" in v.rationale
    # unmeasured latency never passes
    assert not evaluate_gates(good.snap, weak.snap, None, 25.0, evidence=evidence).passed


def test_a_latency_over_budget_on_a_contended_host_is_amber_and_a_pass_stands(case: dict[str, Any]) -> None:
    good, weak = case["good"], case["weak"]
    evidence = _evidence(good, weak)
    busy = "contended: other work used 48% of the 2 cores' time (more than 25%); load average 2.1 -> 2.4"
    slow = Latency(p95_ms=31.5, source="packaging microbenchmark", budget_p95_ms=25.0, contended=busy)
    v = evaluate_gates(good.snap, weak.snap, slow, 25.0, evidence=evidence)
    (latency,) = [g for g in v.gates if g.name == "latency"]
    assert latency.status == "amber" and not v.passed and "latency" not in [g.name for g in v.failed]
    assert "other work used 48% of the 2 cores' time" in latency.rationale
    assert "re-measure on a quiet node" in latency.rationale
    fast = Latency(p95_ms=12.0, source="packaging microbenchmark", budget_p95_ms=25.0, contended=busy)
    (latency,) = [
        g
        for g in evaluate_gates(good.snap, weak.snap, fast, 25.0, evidence=evidence).gates
        if g.name == "latency"
    ]
    assert latency.status == "pass"  # contention only slows an engine: within budget anyway


def test_an_underconfident_candidate_is_red_on_calibration_only(case: dict[str, Any]) -> None:
    """The same detections with every score above the operating threshold squeezed towards it
    (a monotone map fixing 0.3: the ranking, every AP and the recall at 0.3 are unchanged); the
    mostly-correct detections now claim ~35%: the paired ECE delta is far beyond +2 points."""
    weak = case["weak"]
    coco = case["coco"]
    dets = predictions_from_gt(coco, seed=2, recall=0.80, jitter=0.6)
    squeezed = {
        i: Detections(
            d.boxes, np.where(d.scores > 0.3, 0.3 + 0.2 * (d.scores - 0.3), d.scores), d.category_ids
        )
        for i, d in dets.items()
    }
    v = _judge(_evaluate(coco, squeezed, "1.3.0"), weak)
    assert [g.name for g in v.failed] == ["calibration"], v.rationale
    cal = next(d for d in v.decisions if d.gate == "calibration")
    assert cal.delta is not None and cal.delta.low > 0.02 and cal.limit == "<= +2.00"
    assert "beyond the tolerance +2.00 pts" in v.rationale
    ap = next(d for d in v.decisions if d.gate == "weighted_map")
    assert ap.delta is not None and ap.delta.point == pytest.approx(0.0, abs=1e-12)
    # The same predictions as production: zero ECE delta, green.
    same = _judge(weak, weak)
    assert next(d for d in same.decisions if d.gate == "calibration").verdict == "green"


def test_a_comparison_without_intervals_is_amber_never_green(case: dict[str, Any]) -> None:
    """An evaluation stored without paired evidence cannot promote on point estimates."""
    v = evaluate_gates(case["good"].snap, case["weak"].snap, LATENCY_OK, 25.0)
    assert v.verdict == "amber" and not v.passed
    assert "no paired intervals" in v.gates[0].rationale


def test_missing_production_baseline(case: dict[str, Any]) -> None:
    good = case["good"].snap
    v = evaluate_gates(good, None, LATENCY_OK, 25.0)
    assert v.passed and not v.baseline_available
    status = {g.name: g.status for g in v.gates}
    assert status == {
        "weighted_map": "pass",
        "critical_slices": "skipped",
        "safety_recall": "skipped",
        "latency": "pass",
        "calibration": "skipped",
    }
    assert "absolute floor" in v.gates[0].requirement and "No production baseline" in v.rationale
    # Without a baseline the absolute floor still catches a poor model.
    empty = {i: Detections.empty() for i in (int(im["id"]) for im in case["coco"]["images"])}
    poor = _evaluate(case["coco"], empty, "0.0.1").snap
    assert not evaluate_gates(poor, None, LATENCY_OK, 25.0).passed
    blocking = GatesConfig.model_validate({**default_gates().model_dump(), "missing_baseline": "block"})
    vb = evaluate_gates(good, None, LATENCY_OK, 25.0, blocking)
    assert not vb.passed and "missing_baseline: block" in vb.rationale


def test_empty_predictions_give_a_clear_red_report_without_nan(case: dict[str, Any]) -> None:
    coco = case["coco"]
    empty = {int(im["id"]): Detections.empty() for im in coco["images"]}
    model = _evaluate(coco, empty, "0.0.1")
    snap, per_slice, slices = model.snap, model.per_slice, model.slices
    assert snap.AP == 0.0 and snap.ece is None and snap.dece is None
    v = _judge(model, case["weak"])
    assert not v.passed
    status = {g.name: g.status for g in v.gates}
    assert status["weighted_map"] == "fail" and status["critical_slices"] == "fail"
    assert status["calibration"] == "skipped" and "undefined for the candidate" in v.gates[4].rationale
    table = slice_table(coco, per_slice, slices, case["weak"].per_slice)
    assert table["AP"].null_count() == 0 and not table["AP"].is_nan().any()
    json.loads(json_bytes({"verdict": v.model_dump(), "slices": table.to_dicts()}))  # allow_nan=False


def test_class_absent_from_ground_truth_is_left_out_by_name(case: dict[str, Any]) -> None:
    coco = dict(case["coco"])
    coco["annotations"] = [a for a in coco["annotations"] if a["category_id"] != 3]
    good = predictions_from_gt(coco, seed=1, recall=0.97, jitter=0.3, score_range=(0.85, 0.99))
    weak = predictions_from_gt(coco, seed=2, recall=0.80, jitter=0.6)
    gm, wm = _evaluate(coco, good, "1.3.0"), _evaluate(coco, weak, "1.2.0")
    g, per_slice = gm.snap, gm.per_slice
    assert g.per_class_AP["motorcycle"] is None and per_slice["all"]["per_class_AP"]["motorcycle"] == -1.0
    v = _judge(gm, wm)
    assert v.verdict != "red", v.rationale
    assert "left out (no ground truth in the evaluated images): motorcycle" in v.gates[0].rationale
    # Recall of a class without ground truth has no interval: amber, never silently green.
    assert next(g for g in v.gates if g.name == "safety_recall").status == "amber"
    assert weighted_map(g.per_class_AP, {"car": 1, "truck": 1, "motorcycle": 2}) == pytest.approx(
        (g.per_class_AP["car"] + g.per_class_AP["truck"]) / 2
    )


def test_thin_critical_slices_are_amber_never_silently_green() -> None:
    coco, _ = make_split("golden_test", 6, 2, 3000, seed=3, with_frames=False)
    good = _evaluate(coco, predictions_from_gt(coco, seed=1, recall=0.97, jitter=0.3), "1.3.0")
    weak = _evaluate(coco, predictions_from_gt(coco, seed=2, recall=0.5), "1.2.0")
    v = _judge(good, weak)
    cs = v.gates[1]
    assert cs.status == "amber" and "insufficient support" in cs.rationale and "< 30" in cs.rationale
    assert v.verdict == "amber" and not v.passed


def test_a_change_on_one_30_image_slice_is_amber_on_that_slice() -> None:
    """Candidate = production everywhere but fog (30 images), where its detections are drawn
    afresh from the same generator: the fog delta is noise the interval cannot rule out."""
    coco, _ = make_split("golden_test", 45, 4, 3000, seed=0, with_frames=False)
    fog_images = [im for im in coco["images"] if im["weather"] == "fog"]
    for im in fog_images[30:]:  # exactly 30 foggy images: the example
        im["weather"] = "clear"
    fog = {int(im["id"]) for im in fog_images[:30]}
    prod = predictions_from_gt(coco, seed=2, recall=0.8, jitter=0.6)
    redraw = predictions_from_gt(coco, seed=7, recall=0.8, jitter=0.6)
    cand = {i: (redraw[i] if i in fog else d) for i, d in prod.items()}
    v = _judge(_evaluate(coco, cand, "1.3.0"), _evaluate(coco, prod, "1.2.0"))
    by_slice = {d.scope: d for d in v.decisions if d.gate == "critical_slices"}
    assert by_slice["fog"].verdict == "amber", by_slice["fog"].reason
    assert by_slice["fog"].n_to_decide and by_slice["fog"].n_to_decide > 30
    # Slices without a foggy image are unchanged (a zero delta): green where they hold 30
    # images or more, amber "insufficient support" where fewer.
    spans = {s.name: set(s.image_ids) for s in catalog_slices(load_slices(), coco)}
    untouched = {name: len(spans[name]) for name in by_slice if not spans[name] & fog}
    assert any(n >= 30 for n in untouched.values()) and any(n < 30 for n in untouched.values())
    for name, n in untouched.items():
        assert by_slice[name].verdict == ("green" if n >= 30 else "amber"), by_slice[name].reason
    assert v.verdict == "amber" and "fog" in [d.scope for d in v.amber] and not v.failed
    md = verdict_markdown(v, "t")
    assert "AMBER" in md and "fog AP" in md and "(n = 30)" in md


def test_a_slice_tolerance_override_decides_that_slice_only(case: dict[str, Any]) -> None:
    """``slice_tolerances`` widens one slice's tolerance: the fog-blind candidate's fog delta
    (-100%) stays red under 50% but the gate reads the override, not the default."""
    base = default_gates()
    cfg = GatesConfig.model_validate(
        {
            **base.model_dump(),
            "critical_slices": {**base.critical_slices.model_dump(), "slice_tolerances": {"fog": 0.5}},
        }
    )
    v = _judge(case["degraded"], case["weak"], cfg=cfg)
    fog = next(d for d in v.decisions if d.scope == "fog")
    night = next(d for d in v.decisions if d.scope == "night")
    weak_fog, weak_night = case["weak"].snap.slices["fog"].AP, case["weak"].snap.slices["night"].AP
    assert fog.tolerance_points == pytest.approx(50 * (weak_fog or 0))
    assert night.tolerance_points == pytest.approx(2 * (weak_night or 0))
    assert fog.verdict == "red"
    with pytest.raises(ValueError, match="slice tolerances are fractions"):
        GatesConfig.model_validate(
            {
                **base.model_dump(),
                "critical_slices": {**base.critical_slices.model_dump(), "slice_tolerances": {"fog": 2}},
            }
        )
