"""The gate on the shipped bundles (skipped where they or the demo dataset are absent): the
trained candidate passes; the weaker production model and the candidate made blind in fog
(a wrapped engine) are red for the right reasons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adas.datasets.slices import load_slices
from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.gates import Latency, evaluate_gates
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
        out[name] = snapshot(c.version, per_slice, slices, cal)
    return out


LATENCY = Latency(p95_ms=5.0, source="test", budget_p95_ms=25.0)


def test_trained_candidate_passes(snapshots: dict[str, Any]) -> None:
    v = evaluate_gates(snapshots["candidate"], snapshots["production"], LATENCY, 25.0)
    assert v.passed, v.rationale


def test_production_model_is_red(snapshots: dict[str, Any]) -> None:
    v = evaluate_gates(snapshots["production"], snapshots["production"], LATENCY, 25.0)
    assert not v.passed and "weighted_map" in [g.name for g in v.failed]
    # Against the candidate as the baseline it loses on critical slices as well.
    v2 = evaluate_gates(snapshots["production"], snapshots["candidate"], LATENCY, 25.0)
    assert not v2.passed and v2.failing_slices


def test_candidate_blind_in_fog_is_red_on_fog(snapshots: dict[str, Any]) -> None:
    v = evaluate_gates(snapshots["fog_blind"], snapshots["production"], LATENCY, 25.0)
    assert not v.passed
    assert "fog" in [f.slice for f in v.failing_slices]
    assert "critical slice regression" in v.rationale
