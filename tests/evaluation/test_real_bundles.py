"""The gate on the shipped bundles (skipped where they or the demo dataset are absent), decided
on paired intervals: the trained candidate is green; the weaker production model offered against
it and the candidate made blind in fog (a wrapped engine) are red for the right reasons, with
intervals that exclude zero; production against itself is green with zero deltas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adas.datasets.slices import load_slices
from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.evidence import paired_evidence
from adas.evaluation.gates import GateVerdict, Latency, default_gates, evaluate_gates
from adas.evaluation.pipeline import detection_calibration, snapshot
from adas.evaluation.runner import MaskedEngine, fog_mask, load_frames, open_engine, predict
from adas.evaluation.slices import catalog_slices, slice_metrics
from adas.settings import DEMO_BUNDLES_DIR, REPO_ROOT

DATA = REPO_ROOT / ".adas" / "datasets" / "demo"
CANDIDATE, PRODUCTION = DEMO_BUNDLES_DIR / "candidate", DEMO_BUNDLES_DIR / "production"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (CANDIDATE.is_dir() and PRODUCTION.is_dir() and (DATA / "golden_test.json").is_file()),
        reason="needs demo/bundles/{candidate,production} and .adas/datasets/demo",
    ),
]


def _engine(bundle: Path, out: Path):  # type: ignore[no-untyped-def]
    from adas.detector.bundle import load_bundle_model, read_contract
    from adas.packaging.export import export_onnx
    from adas.packaging.ort_engines import build_fp32_engine

    contract = read_contract(bundle)
    export_onnx(load_bundle_model(bundle), contract, out / "export.onnx")
    path = build_fp32_engine(out / "export.onnx", out / "model.onnx").path
    return open_engine(path, "onnxruntime", contract), contract


@pytest.fixture(scope="module")
def snapshots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = default_evaluation_settings()
    gt = json.loads((DATA / "golden_test.json").read_text())
    frames, _ = load_frames(
        lambda n: (DATA / n).read_bytes(), [im["file_name"] for im in gt["images"]], (96, 384)
    )
    ids = [im["id"] for im in gt["images"]]
    slices = catalog_slices(load_slices(), gt)
    out: dict[str, Any] = {}
    engines = {}
    for name, bundle in (("candidate", CANDIDATE), ("production", PRODUCTION)):
        d = tmp_path_factory.mktemp(name)
        engines[name] = _engine(bundle, d)
    cand_engine, contract = engines["candidate"]
    engines["fog_blind"] = (
        MaskedEngine(
            cand_engine, fog_mask(contract.input.normalization), contract.postprocess.heatmap_output
        ),
        contract,
    )
    for name, (engine, c) in engines.items():
        p = predict(engine, frames, ids, c, score_threshold=settings.score_threshold)
        per_slice = slice_metrics(gt, p.records(), slices)
        cal = detection_calibration(gt, p, ids, settings, float(c.postprocess.score_threshold))
        out[name] = (snapshot(c.version, per_slice, slices, cal), p.records())
    out["_gt"], out["_ids"], out["_slices"] = gt, ids, {s.name: s.image_ids for s in slices}
    return out


LATENCY = Latency(p95_ms=5.0, source="test", budget_p95_ms=25.0)


def _judge(snapshots: dict[str, Any], candidate: str, production: str) -> GateVerdict:
    (c_snap, c_rec), (p_snap, p_rec) = snapshots[candidate], snapshots[production]
    cfg = default_gates()
    evidence = paired_evidence(
        snapshots["_gt"],
        c_rec,
        p_rec,
        snapshots["_ids"],
        snapshots["_slices"],
        class_weights=cfg.weighted_map.class_weights,
        recall_classes=cfg.safety_recall.classes,
        resamples=500,
    )
    return evaluate_gates(c_snap, p_snap, LATENCY, 25.0, evidence=evidence)


def test_trained_candidate_is_green(snapshots: dict[str, Any]) -> None:
    v = _judge(snapshots, "candidate", "production")
    assert v.verdict == "green", v.rationale
    # Every AP and recall delta is an improvement the interval shows (calibration error: lower).
    assert all(d.delta is not None and d.delta.low > 0 for d in v.decisions if d.higher_is_better)


def test_production_against_itself_is_green_and_against_the_candidate_red(snapshots: dict[str, Any]) -> None:
    v = _judge(snapshots, "production", "production")
    assert v.verdict == "green" and all(d.delta and d.delta.point == 0.0 for d in v.decisions)
    # The shipped production model offered against the trained candidate: a regression the
    # intervals show, overall and on the critical slices.
    v2 = _judge(snapshots, "production", "candidate")
    assert v2.verdict == "red" and {g.name for g in v2.failed} >= {"weighted_map", "critical_slices"}
    wm = next(d for d in v2.decisions if d.gate == "weighted_map")
    assert wm.delta is not None and wm.delta.high < 0
    assert v2.failing_slices


def test_candidate_blind_in_fog_is_red_on_fog(snapshots: dict[str, Any]) -> None:
    v = _judge(snapshots, "fog_blind", "production")
    assert v.verdict == "red"
    assert "fog" in [f.slice for f in v.failing_slices]
    assert "critical slice regression" in v.rationale
    fog = next(d for d in v.decisions if d.scope == "fog")
    assert fog.delta is not None and fog.delta.high < 0
