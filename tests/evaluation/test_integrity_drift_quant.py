"""Integrity guards (Great Expectations, leakage, separation), prediction drift (Evidently) and
quantization sensitivity across precisions."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

from adas.datasets.slices import load_slices
from adas.detector.postprocess import Detections
from adas.evaluation.config import IntegritySettings, SeparationRule, default_evaluation_settings
from adas.evaluation.integrity import (
    check_integrity,
    scene_leakage,
    separation_violations,
    temporal_violations,
)
from adas.evaluation.quantization import markdown, quantization_sensitivity, sensitivity_frame
from adas.evaluation.runner import Predictions
from adas.evaluation.slices import catalog_slices

from .synthetic import make_split, predictions_from_gt


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for split, (n, fps, first) in {
        "golden_train": (6, 3, 1000),
        "golden_val": (3, 3, 2000),
        "golden_test": (8, 3, 3000),
    }.items():
        out[split], _ = make_split(
            split, n, fps, first, seed=first, scene_prefix=f"{split[7:]}-", with_frames=False
        )
    out["replay_sequences"], _ = make_split(
        "replay", 2, 5, 5000, seed=9, scene_prefix="replay-", frame_interval_s=0.2, with_frames=False
    )
    return out


def test_clean_manifests_pass_every_guard(manifests: dict[str, dict[str, Any]]) -> None:
    settings = default_evaluation_settings().integrity
    r = check_integrity(manifests, settings, [96, 384], manifests["golden_test"]["categories"])
    assert r["passed"], r["checks"]
    assert (
        r["schema"]["tables"]["images"]["evaluated"] >= 15
        and r["schema"]["tables"]["annotations"]["rows"] > 0
    )


def test_schema_violations_name_rows_and_values(manifests: dict[str, dict[str, Any]]) -> None:
    bad = copy.deepcopy(manifests)
    test = bad["golden_test"]
    test["images"][0]["weather"] = "hail"
    test["images"][1]["width"] = 640
    test["images"][2]["id"] = test["images"][3]["id"]  # duplicate image id
    test["annotations"][0]["bbox"] = [380.0, 10.0, 12.0, 7.0]  # runs off the right edge
    test["annotations"][1]["bbox"] = [10.0, 10.0, 0.0, 7.0]  # zero width
    test["annotations"][2]["category_id"] = 9
    settings = default_evaluation_settings().integrity
    r = check_integrity(bad, settings, [96, 384], test["categories"])
    assert not r["passed"] and not r["checks"]["manifest_schema"]["passed"]
    text = " ".join(v["message"] for v in r["checks"]["manifest_schema"]["violations"])
    assert "images.weather: expect_column_values_to_be_in_set" in text and "'hail'" in text
    assert "images.width" in text and "images.id: expect_column_values_to_be_unique" in text
    assert (
        "annotations.right_overflow" in text and "annotations.w" in text and "annotations.category_id" in text
    )
    ids = {i for v in r["checks"]["manifest_schema"]["violations"] for i in v["ids"]}
    assert f"golden_test:{test['images'][0]['id']}" in ids
    # The leakage guards are unaffected by schema problems.
    assert r["checks"]["no_scene_leakage"]["passed"]


def test_leaked_scene_is_named(manifests: dict[str, dict[str, Any]]) -> None:
    leaked = copy.deepcopy(manifests)
    scene = leaked["golden_test"]["images"][0]["scene_id"]
    leaked["golden_train"]["images"].append(
        {**leaked["golden_test"]["images"][0], "id": 1999, "split": "golden_train"}
    )
    (v,) = scene_leakage(leaked)
    assert v.rule == "scene_leakage" and v.ids == [scene]
    assert f"{scene} in golden_test, golden_train" in v.message


def test_scenario_and_temporal_separation(manifests: dict[str, dict[str, Any]]) -> None:
    m = copy.deepcopy(manifests)
    m["golden_train"]["images"][0]["scenario"] = "roundabout"
    rules = IntegritySettings(
        separation=[SeparationRule(scenario="roundabout", forbidden_in=["golden_train", "golden_val"])],
        min_frame_gap_s={"golden_test": 0.5},
    )
    (v,) = separation_violations(m, rules)
    assert (
        v.ids == [m["golden_train"]["images"][0]["scene_id"]]
        and "must not appear in golden_train" in v.message
    )
    m["golden_test"]["images"][1]["timestamp_s"] = 0.1  # 0.1 s after its predecessor
    vs = temporal_violations(m, rules)
    assert [x.rule for x in vs] == ["temporal_separation"] and "closer than 0.5 s" in vs[0].message
    assert vs[0].ids == [f"{m['golden_test']['images'][0]['scene_id']}:3000->3001"]


def _preds(coco: dict[str, Any], dets: dict[int, Detections]) -> Predictions:
    ids = [int(im["id"]) for im in coco["images"]]
    rng = np.random.default_rng(0)
    return Predictions(ids, [dets[i] for i in ids], rng.random(len(ids)), rng.random(len(ids)))


def test_quantization_sensitivity_flags_the_slice_int8_broke() -> None:
    coco, _ = make_split("golden_test", 24, 3, 3000, seed=2, with_frames=False)
    fp32 = predictions_from_gt(coco, seed=1, recall=0.95)
    night = {int(im["id"]) for im in coco["images"] if im["lighting"] == "night"}
    int8 = {i: (Detections.empty() if i in night else d) for i, d in fp32.items()}
    slices = catalog_slices(load_slices(), coco)
    r = quantization_sensitivity(
        coco, {"int8": _preds(coco, int8), "fp32": _preds(coco, fp32)}, slices, operating_threshold=0.3
    )
    assert r["reference"] == "fp32" and r["precisions"] == ["fp32", "int8"]
    flagged = {(f["precision"], f["slice"]) for f in r["flagged"]}
    assert ("int8", "night") in flagged and ("int8", "fog") not in flagged
    agree = r["agreement"]["int8"]
    assert (
        agree["missing_fraction"] > 0
        and agree["extra_fraction"] == 0
        and agree["mean_matched_iou"] == pytest.approx(1.0)
    )
    df = sensitivity_frame(r)
    assert df.columns == ["slice", "critical", "AP_fp32", "AP_int8", "delta_int8"]
    assert "| **night** |" in markdown(r)
    empty = quantization_sensitivity(coco, {}, slices, operating_threshold=0.3)
    assert empty["reference"] is None and "no precision" in empty["note"]


def test_drift_report_flags_shifted_scores() -> None:
    from adas.evaluation.drift import drift_report

    coco, _ = make_split("golden_test", 24, 3, 3000, seed=4, with_frames=False)
    prod = predictions_from_gt(coco, seed=1, recall=0.9, score_range=(0.5, 0.7))
    cand = predictions_from_gt(coco, seed=2, recall=0.9, score_range=(0.85, 0.99))
    names = {1: "car", 2: "truck", 3: "motorcycle"}
    html, summary = drift_report(_preds(coco, cand), _preds(coco, prod), names, (96, 384), 0.3)
    assert set(html) == {"per_frame", "per_detection"} and html["per_detection"].lstrip().startswith(b"<")
    assert summary["frames"] == len(coco["images"])
    assert summary["per_detection"]["columns"]["score"]["drifted"] is True
    assert "per_detection.score" in summary["drifted"] and "per_detection.width" not in summary["drifted"]
    # No detections on one side: a clear skip, no crash.
    empty = {int(im["id"]): Detections.empty() for im in coco["images"]}
    _, s2 = drift_report(_preds(coco, empty), _preds(coco, prod), names, (96, 384), 0.3)
    assert "too few rows" in s2["per_detection"]["skipped"] and s2["candidate_detections"] == 0
