"""The evaluation use-cases without Dagster: the regression gate of a cell, the quantization study
of a device, challenge suites and the input checks of a cell evaluation, on a temporary store;
and what the presenters make of their results."""

import json
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pytest

from adas.catalog import UnsupportedTargetError, load_catalog
from adas.cell import Cell
from adas.datasets.slices import DEFAULT_SLICES_PATH
from adas.detector.bundle import build_contract
from adas.evaluation.cell_evaluation import EvalRequest, evaluate_cell
from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.evidence import DeltaInterval, PairedEvidence
from adas.evaluation.gates import Latency, MetricsSnapshot
from adas.evaluation.inputs import (
    ChallengeSuiteError,
    EvaluationInputError,
    challenge_suites_root,
    stage_challenge_suites,
)
from adas.evaluation.refs import EvalReportRef
from adas.evaluation.runner import Predictions
from adas.evaluation.usecases import IntegrityReport, judge_cell, quantization_study
from adas.intake.refs import DatasetRef, ReplayBundleRef, SliceCatalogRef
from adas.packaging.refs import EngineRef
from adas.storage import LocalArtifactStore
from adas_assets.evaluation.presenters import (
    gate_check_result,
    gate_result,
    integrity_check_result,
    quantization_result,
)

from .stubs import NORMALIZATION, engine_ref, stored, write_challenge_suite
from .synthetic import make_split, predictions_from_gt

CELL = Cell("x86-cpu", "fp32")
TITLE = "test-detector 0.2.0 on x86-cpu/fp32"


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(root=str(tmp_path / "artifacts"))


def _engine(store: LocalArtifactStore, tmp_path: Path, version: str, precision: str = "fp32") -> EngineRef:
    model = tmp_path / f"model-{version}.onnx"
    model.write_bytes(b"an engine file")
    contract = build_contract(
        version=version, model_name="test-detector", task="vehicle-detection-2d", normalization=NORMALIZATION
    )
    return engine_ref(store, contract, model, "x86-cpu", precision)


def _snapshot(version: str, ap: float) -> MetricsSnapshot:
    return MetricsSnapshot(
        version=version, AP=ap, per_class_AP={"car": ap, "truck": ap, "motorcycle": ap}, slices={}
    )


def _evidence(delta: float, half_width: float = 0.01) -> PairedEvidence:
    """Paired intervals as the bootstrap would record them: the weighted-AP delta of the test,
    safety recall unchanged."""
    d = DeltaInterval(point=delta, low=delta - half_width, high=delta + half_width, n=10)
    zero = DeltaInterval(point=0.0, low=0.0, high=0.0, n=10)
    return PairedEvidence(
        resamples=100,
        seed=0,
        confidence=0.95,
        n_images=10,
        overall={"weighted_AP": d, "recall/motorcycle": zero},
    )


def _report(
    store: LocalArtifactStore,
    tmp_path: Path,
    ap: float,
    production_ap: float | None,
    half_width: float = 0.01,
) -> EvalReportRef:
    engine = _engine(store, tmp_path, "0.2.0")
    production = None if production_ap is None else _engine(store, tmp_path, "0.1.0")
    store.put_bytes(f"{engine.prefix}/eval_report.json", b"{}")
    return EvalReportRef(
        device="x86-cpu",
        precision="fp32",
        engine=engine,
        production_engine=production,
        dataset_tag="sim-synthetic",
        split="golden_test",
        frames=10,
        profile="standard",
        prefix=engine.prefix,
        files={"eval_report.json": stored(store, f"{engine.prefix}/eval_report.json")},
        snapshot=_snapshot("0.2.0", ap),
        production_snapshot=None if production_ap is None else _snapshot("0.1.0", production_ap),
        latency=Latency(p95_ms=4.0, source="test", budget_p95_ms=25.0),
        evidence=None if production_ap is None else _evidence(ap - production_ap, half_width),
    )


# --------------------------------------------------------------------------- regression gate


def test_red_gate_is_recorded_with_a_blocking_report(store: LocalArtifactStore, tmp_path: Path) -> None:
    report = _report(store, tmp_path, ap=0.50, production_ap=0.60)
    warnings: list[str] = []
    judgement = judge_cell(store, CELL, report, warn=warnings.append)
    ref = judgement.ref
    assert not ref.passed and ref.verdict.verdict == "red" and ref.production_version == "0.1.0"
    assert [g.name for g in ref.verdict.failed] == ["weighted_map"]
    assert set(ref.files) == {"gate_verdict.json", "blocking_report.md", "gate_delta_forest.png"}
    assert judgement.forest_png and store.get_bytes(ref.files["gate_delta_forest.png"].key).startswith(b"\x89PNG")
    assert all(f.key.startswith(report.prefix + "/") for f in ref.files.values())
    body = json.loads(store.get_bytes(ref.files["gate_verdict.json"].key))
    assert (body["device"], body["precision"], body["version"]) == ("x86-cpu", "fp32", "0.2.0")
    assert body["production_version"] == "0.1.0" and body["verdict"] == "red"
    text = store.get_bytes(ref.files["blocking_report.md"].key).decode()
    assert text == judgement.blocking_report and text.startswith(f"# BLOCKED: {TITLE}")
    assert "- **production**: 0.1.0" in text
    assert f"- **evaluation**: {report.files['eval_report.json'].uri}" in text
    assert warnings == [f"gate RED for {TITLE}: {ref.verdict.rationale}"]

    metadata = gate_result(judgement).metadata
    assert metadata["verdict"] == "red" and metadata["passed"] is False
    assert metadata["blocking_report_text"].value == text
    assert metadata["blocking_report"].value == ref.files["blocking_report.md"].uri
    check = gate_check_result(ref)
    assert not check.passed and check.description == ref.verdict.rationale
    assert check.metadata["failed_gates"].value == "weighted_map"
    assert check.metadata["failing_slices"].value == "none"


def test_amber_gate_warns_and_names_what_would_decide_it(store: LocalArtifactStore, tmp_path: Path) -> None:
    """-0.5 points with +/-3 points of interval: neither shown worse than -1 nor ruled out."""
    report = _report(store, tmp_path, ap=0.595, production_ap=0.60, half_width=0.03)
    warnings: list[str] = []
    judgement = judge_cell(store, CELL, report, warn=warnings.append)
    ref = judgement.ref
    assert not ref.passed and ref.verdict.verdict == "amber" and judgement.blocking_report is None
    assert warnings == [f"gate AMBER for {TITLE}: {ref.verdict.rationale}"]
    (amber,) = ref.verdict.amber
    assert amber.quote == "all weighted AP -0.50 [-3.50, +2.50] (n = 10)"
    assert amber.n_to_decide == pytest.approx(360, abs=1)  # 10 x (3.0 / 0.5)^2, rounded up
    assert "insufficient evidence" in ref.verdict.rationale
    check = gate_check_result(ref)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["amber_deltas"].value == amber.quote
    assert gate_result(judgement).metadata["verdict"] == "amber"


def test_green_gate_without_baseline(store: LocalArtifactStore, tmp_path: Path) -> None:
    report = _report(store, tmp_path, ap=0.60, production_ap=None)
    warnings: list[str] = []
    judgement = judge_cell(store, CELL, report, warn=warnings.append)
    assert judgement.ref.passed and judgement.blocking_report is None and not warnings
    assert judgement.ref.production_version is None and set(judgement.ref.files) == {"gate_verdict.json"}
    assert "absolute floor" in judgement.ref.verdict.gates[0].requirement
    metadata = gate_result(judgement).metadata
    assert metadata["verdict"] == "green" and "blocking_report" not in metadata
    assert f"### {TITLE}: GREEN" in metadata["rationale"].value
    check = gate_check_result(judgement.ref)
    assert check.passed and "blocking_report" not in check.metadata


# --------------------------------------------------------------------------- quantization


def _golden(store: LocalArtifactStore) -> tuple[DatasetRef, SliceCatalogRef, dict[str, Any]]:
    gt, _ = make_split("golden_test", 6, 3, 1000, seed=0, with_frames=False)
    store.put_bytes("datasets/q/golden_test.json", json.dumps(gt).encode())
    dataset = DatasetRef(
        tag="sim-synthetic",
        prefix="datasets/q",
        size="tiny",
        config_hash="0" * 64,
        frame_size=[96, 384],
        counts={},
        manifests={"golden_test": stored(store, "datasets/q/golden_test.json")},
        file_count=1,
    )
    store.put_file("config-snapshots/slices/test.yaml", DEFAULT_SLICES_PATH)
    slices = SliceCatalogRef(
        dataset_tag=dataset.tag,
        slices_file=stored(store, "config-snapshots/slices/test.yaml"),
        critical=[],
        counts={},
    )
    return dataset, slices, gt


def test_quantization_study_compares_what_exists(store: LocalArtifactStore, tmp_path: Path) -> None:
    dataset, slices, gt = _golden(store)
    fp32 = _report(store, tmp_path, ap=0.6, production_ap=None)
    ids = [int(im["id"]) for im in gt["images"]]
    dets = predictions_from_gt(gt, seed=1, recall=0.9)
    preds = Predictions(ids, [dets[i] for i in ids], np.zeros(len(ids)), np.zeros(len(ids)))
    store.put_bytes(f"{fp32.prefix}/predictions.json", preds.to_json())
    fp32 = fp32.model_copy(
        update={"files": {**fp32.files, "predictions.json": stored(store, f"{fp32.prefix}/predictions.json")}}
    )
    warnings: list[str] = []
    study = quantization_study(
        store,
        Cell("x86-cpu", "int8"),
        {"x86-cpu|fp32": fp32},
        dataset,
        slices,
        load_catalog(),
        default_evaluation_settings(),
        warn=warnings.append,
    )
    # The int8 cell's own evaluation has not run: fp32 is compared with itself, int8 is named.
    assert study.ref.reference == "fp32" and study.ref.precisions == ["fp32"] and study.ref.flagged == []
    assert study.not_evaluated == ["int8"] and study.report["versions"] == {"fp32": "0.2.0"}
    assert warnings == ["x86-cpu/int8 has no evaluation yet: compared fp32 only"]
    prefix = "models/vehicle-detection-2d/0.2.0/x86-cpu/int8/"
    assert all(f.key.startswith(prefix) for f in study.ref.files.values())
    body = json.loads(store.get_bytes(study.ref.files["quantization_sensitivity.json"].key))
    assert body["not_evaluated"] == ["int8"] and body["reference"] == "fp32"
    metadata = quantization_result(study).metadata
    summary = metadata["summary"].value
    assert summary.startswith("### x86-cpu: precisions fp32 (reference fp32)")
    assert "Not evaluated yet: int8" in summary and metadata["flagged_slices"] == 0


def test_quantization_study_refuses_unsupported_cells_and_nothing_to_compare(
    store: LocalArtifactStore,
) -> None:
    dataset, slices, _ = _golden(store)
    args = (dataset, slices, load_catalog(), default_evaluation_settings())
    with pytest.raises(UnsupportedTargetError, match="x86-cpu/fp16 is not a supported combination"):
        quantization_study(store, Cell("x86-cpu", "fp16"), {}, *args)
    with pytest.raises(EvaluationInputError, match="no eval_report of x86-cpu is materialized yet"):
        quantization_study(store, CELL, {}, *args)


# --------------------------------------------------------------------------- cell evaluation inputs


def test_challenge_suites_are_stored_once_and_named(store: LocalArtifactStore, tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_challenge_suite(home)
    gt: dict[str, Any] = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}
    log: list[str] = []
    merged, used = stage_challenge_suites(
        store, challenge_suites_root(home), ["tunnels"], gt, (96, 384), log.append
    )
    (suite,) = merged
    assert used[0].startswith("tunnels@") and suite.slice.name == "challenge_tunnels" and suite.slice.critical
    assert suite.frames.shape == (3, 96, 384, 3) and len(gt["images"]) == 3
    prefix = f"challenge_suites/tunnels/{used[0].split('@')[1]}"
    assert store.exists(f"{prefix}/manifest.json") and log == [
        f"challenge suite tunnels: 3 frames (stored at {prefix})"
    ]
    with pytest.raises(ChallengeSuiteError, match=r"challenge suite 'absent': .*no manifest\.json"):
        stage_challenge_suites(store, challenge_suites_root(home), ["absent"], gt, (96, 384))


def test_cell_evaluation_refuses_bad_inputs_before_opening_engines(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    dataset, slices, _ = _golden(store)
    engine = _engine(store, tmp_path, "0.2.0")
    request = EvalRequest(
        cell=CELL,
        engine=engine,
        production=None,
        dataset=dataset,
        slice_catalog=slices,
        replay=ReplayBundleRef(
            dataset_tag=dataset.tag, manifest=dataset.manifests["golden_test"], sequences=[]
        ),
    )
    settings = default_evaluation_settings()

    def run(r: EvalRequest, s: Any = settings) -> None:
        evaluate_cell(store, r, load_catalog(), s, adas_home=tmp_path)

    with pytest.raises(UnsupportedTargetError, match="x86-cpu/fp16"):
        run(EvalRequest(**{**request.__dict__, "cell": Cell("x86-cpu", "fp16")}))
    with pytest.raises(EvaluationInputError, match="profile must be 'standard' or 'full', got 'quick'"):
        run(EvalRequest(**{**request.__dict__, "profile": "quick"}))
    with pytest.raises(EvaluationInputError, match="golden_dataset has no manifest 'golden_val'"):
        run(request, settings.model_copy(update={"split": "golden_val"}))


# --------------------------------------------------------------------------- integrity presenter


def test_integrity_results_name_the_offending_ids() -> None:
    report = IntegrityReport(
        dataset_tag="leaky",
        splits=["golden_train", "golden_test"],
        checks={
            "no_scene_leakage": {
                "passed": False,
                "violations": [
                    {
                        "rule": "scene_leakage",
                        "message": "scene s2 in golden_test, golden_train",
                        "ids": ["s2"],
                    },
                    {
                        "rule": "scene_leakage",
                        "message": "scene s1 in golden_test, golden_val",
                        "ids": ["s1"],
                    },
                ],
            },
            "manifest_schema": {"passed": True, "violations": []},
        },
        schema={"tables": {"images": {"rows": 12, "evaluated": 9, "failures": []}}},
    )
    key = dg.AssetKey("golden_dataset")
    leak = integrity_check_result(report, "no_scene_leakage", key)
    assert not leak.passed and leak.description == "scene s2 in golden_test, golden_train"
    assert leak.metadata["offending_ids"].value == "s1, s2" and leak.metadata["violations"].value == 2
    assert (
        leak.metadata["splits"].value == "golden_train, golden_test" and "expectations" not in leak.metadata
    )
    schema = integrity_check_result(report, "manifest_schema", key)
    assert schema.passed and schema.description is None and "details" not in schema.metadata
    (row,) = schema.metadata["expectations"].value.records
    assert row.data == {"table": "images", "rows": 12, "expectations": 9, "failed": 0}
