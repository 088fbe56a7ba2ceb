"""The evaluation use-cases besides the cell evaluation itself (:mod:`adas.evaluation.cell_evaluation`):
dataset integrity, quantization sensitivity of a device, and the regression gate of a cell.

Each reads its inputs from the artifact store, computes with the domain modules, writes its
files beside the model pack where it has any, and returns a typed result that the Dagster layer
presents. Domain code: no Dagster import.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.evaluation.config import EvaluationSettings, IntegritySettings
from adas.evaluation.forest_plot import forest_rows, plot_forest
from adas.evaluation.gates import evaluate_gates
from adas.evaluation.inputs import EvaluationInputError, load_slice_catalog
from adas.evaluation.integrity import check_integrity
from adas.evaluation.quantization import quantization_sensitivity, sensitivity_frame
from adas.evaluation.refs import EvalReportRef, GateRef, QuantizationRef
from adas.evaluation.reports import blocking_report, json_bytes, write_files
from adas.evaluation.runner import Predictions
from adas.evaluation.slices import catalog_slices, to_parquet_bytes
from adas.intake.refs import DatasetRef, SliceCatalogRef
from adas.intake.stored import read_file, read_json
from adas.storage import ArtifactStore

Log = Callable[[str], None]


def _quiet(_message: str) -> None:
    """The default ``warn``: say nothing."""


# --------------------------------------------------------------------------- dataset integrity


@dataclass(frozen=True)
class IntegrityReport:
    """Every integrity guard over the golden manifests of one dataset."""

    dataset_tag: str
    splits: list[str]  # the manifests checked
    checks: dict[str, dict[str, Any]]  # guard name -> {"passed": bool, "violations": [...]}
    schema: dict[str, Any] | None  # Great Expectations' per-table results


def dataset_integrity(
    store: ArtifactStore, dataset: DatasetRef, settings: IntegritySettings
) -> IntegrityReport:
    """Schema, scene leakage, scenario and temporal separation over the dataset's manifests."""
    manifests = {
        name: read_json(store, f) for name, f in dataset.manifests.items() if name in settings.splits
    }
    categories = next(iter(manifests.values()))["categories"] if manifests else []
    result = check_integrity(manifests, settings, dataset.frame_size, categories)
    return IntegrityReport(
        dataset_tag=dataset.tag, splits=list(manifests), checks=result["checks"], schema=result["schema"]
    )


# --------------------------------------------------------------------------- quantization


@dataclass(frozen=True)
class QuantizationStudy:
    """FP32 vs FP16 vs INT8 of one device, as stored beside the cell's model pack."""

    ref: QuantizationRef
    report: dict[str, Any]
    not_evaluated: list[str]  # precisions the device offers that have no evaluation yet


def quantization_study(
    store: ArtifactStore,
    cell: Cell,
    eval_reports: Mapping[str, EvalReportRef],
    dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    catalog: TargetCatalog,
    settings: EvaluationSettings,
    warn: Log = _quiet,
) -> QuantizationStudy:
    """Compare the stored predictions of every evaluated precision of ``cell``'s device
    (``eval_reports`` keyed by partition key); the cell's own evaluation may still be running:
    what exists is compared and what is missing is named."""
    cell.require_supported(catalog)
    reports = {Cell.parse(k).precision: r for k, r in eval_reports.items()}
    if not reports:
        raise EvaluationInputError(f"no eval_report of {cell.device} is materialized yet: nothing to compare")
    mine = reports.get(cell.precision) or next(iter(reports.values()))
    preds = {
        p: Predictions.from_json(read_file(store, r.files["predictions.json"]))
        for p, r in reports.items()
        if "predictions.json" in r.files and r.dataset_tag == mine.dataset_tag
    }
    gt = read_json(store, dataset.manifests[settings.split])
    slices = catalog_slices(load_slice_catalog(store, slice_catalog), gt)
    contract = mine.engine.contract
    report = quantization_sensitivity(
        gt, preds, slices, operating_threshold=float(contract.postprocess.score_threshold)
    )
    missing = [p for p in catalog.target(cell.device).precisions if p not in preds]
    report["not_evaluated"] = missing
    if cell.precision not in preds:
        warn(f"{cell.device}/{cell.precision} has no evaluation yet: compared {', '.join(preds)} only")
    report["versions"] = {p: r.version for p, r in reports.items()}
    stored = write_files(
        store,
        cell.pack_prefix(contract.task, contract.version),
        {
            "quantization_sensitivity.json": json_bytes(report),
            "quantization_sensitivity.parquet": to_parquet_bytes(sensitivity_frame(report)),
        },
    )
    ref = QuantizationRef(
        device=cell.device,
        precision=cell.precision,
        reference=report["reference"],
        precisions=report["precisions"],
        flagged=report["flagged"],
        files=stored,
    )
    return QuantizationStudy(ref=ref, report=report, not_evaluated=missing)


# --------------------------------------------------------------------------- regression gate


@dataclass(frozen=True)
class GateJudgement:
    """The regression gate's verdict for one cell, as stored beside its model pack."""

    ref: GateRef
    title: str
    blocking_report: str | None  # the markdown of a red verdict (amber needs evidence, not data)
    forest_png: bytes | None = None  # every paired delta with its interval, coloured by verdict


def judge_cell(
    store: ArtifactStore, cell: Cell, eval_report: EvalReportRef, warn: Log = _quiet
) -> GateJudgement:
    """``config/gates.yaml`` applied to the cell's evaluation; a red verdict is recorded (not
    raised) with a blocking report naming the failing gates and slices."""
    latency = eval_report.latency
    verdict = evaluate_gates(
        eval_report.snapshot,
        eval_report.production_snapshot,
        latency,
        latency.budget_p95_ms if latency else None,
        evidence=eval_report.evidence,
    )
    contract = eval_report.engine.contract
    production = eval_report.production_engine
    prod_version = production.contract.version if production else None
    title = f"{contract.model_name} {contract.version} on {cell.device}/{cell.precision}"
    body = {
        "device": cell.device,
        "precision": cell.precision,
        "version": contract.version,
        "production_version": prod_version,
        **verdict.model_dump(),
    }
    files = {"gate_verdict.json": json_bytes(body)}
    forest: bytes | None = None
    if eval_report.evidence is not None:
        forest = plot_forest(
            forest_rows(eval_report.evidence, verdict.decisions),
            f"{title}: {verdict.verdict.upper()}",
            eval_report.evidence.confidence,
        )
        files["gate_delta_forest.png"] = forest
    blocking: str | None = None
    if verdict.verdict == "amber":
        warn(f"gate AMBER for {title}: {verdict.rationale}")
    if verdict.verdict == "red":
        reports = eval_report.files
        blocking = blocking_report(
            verdict,
            title,
            {
                "production": prod_version or "none",
                "evaluation": reports["eval_report.json"].uri if "eval_report.json" in reports else "",
                "slice metrics": reports["slice_metrics.parquet"].uri
                if "slice_metrics.parquet" in reports
                else "",
            },
        )
        files["blocking_report.md"] = blocking.encode()
        warn(f"gate RED for {title}: {verdict.rationale}")
    ref = GateRef(
        device=cell.device,
        precision=cell.precision,
        version=contract.version,
        production_version=prod_version,
        passed=verdict.passed,
        verdict=verdict,
        files=write_files(store, eval_report.prefix, files),
    )
    return GateJudgement(ref=ref, title=title, blocking_report=blocking, forest_png=forest)
