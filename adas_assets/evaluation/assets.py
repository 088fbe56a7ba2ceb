"""Evaluation assets (specification step 16): eval reports, quantization sensitivity and
regression gates of each target cell.

Each asset reads its inputs, calls one use-case of the core (:mod:`adas.evaluation.cell_evaluation`,
:mod:`adas.evaluation.usecases`) and hands the result to :mod:`adas_assets.evaluation.presenters`.
The checks are in :mod:`adas_assets.evaluation.checks`, the job and schedules in
:mod:`jobs.evaluation`, the challenge-suite sensor in :mod:`sensors.challenge_suite`.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from adas.catalog import TargetCatalog, UnsupportedTargetError
from adas.cell import DEVICE_DIMENSION, Cell
from adas.evaluation.cell_evaluation import EvalRequest, evaluate_cell
from adas.evaluation.config import EVALUATION_FILE, default_evaluation_settings, file_sha256
from adas.evaluation.gates import GATES_FILE
from adas.evaluation.inputs import EvaluationInputError
from adas.evaluation.refs import EvalReportRef
from adas.evaluation.runner import EngineUnavailableError
from adas.evaluation.usecases import judge_cell, quantization_study
from adas.intake.refs import DatasetRef, ReplayBundleRef, SliceCatalogRef
from adas.packaging.refs import EngineRef
from adas.settings import AdasHome
from adas_assets.automation import SupportedTargetCondition, eager_on_supported_targets
from adas_assets.cadence import EVALUATION_FRESHNESS
from adas_assets.evaluation.presenters import eval_report_result, gate_result, quantization_result
from adas_assets.owners import EVALUATION_OWNERS
from adas_assets.partitions import TARGET_PARTITIONS, per_target_description
from resources.artifact_store import ArtifactStoreParam
from resources.io_manager import read_value
from resources.targets import TARGET_CATALOG

EVALUATION = "evaluation"
PRODUCTION_ENGINE = dg.AssetKey("production_engine")
SETTINGS_SHA256 = file_sha256(EVALUATION_FILE)
GATES_SHA256 = file_sha256(GATES_FILE)


@contextmanager
def failures() -> Iterator[None]:
    """A bad input or an engine this machine cannot run fails the step with the core's message."""
    try:
        yield
    except (UnsupportedTargetError, EvaluationInputError, EngineUnavailableError) as exc:
        raise dg.Failure(description=str(exc)) from exc


# --------------------------------------------------------------------------- eval report


class EvalConfig(dg.Config):
    profile: str = Field(
        default="standard",
        description="standard (after packaging, nightly) or full (weekly: every clean frame for "
        "robustness, production robustness too)",
    )
    challenge_suites: list[str] = Field(
        default=[],
        description="Folder names under $ADAS_HOME/challenge_suites/ to evaluate as extra slices",
    )
    log_wandb: bool = Field(default=True, description="Log to W&B (mode from config/evaluation.yaml)")
    threads: int = Field(default=2, ge=1, le=64, description="ONNX Runtime intra-op threads")


def _eval_condition() -> dg.AutomationCondition:
    """The per-target eager condition, except that a missing production baseline (no production
    model packaged for the cell) neither holds evaluation back nor blocks it on its checks."""
    prod = dg.AssetSelection.assets(PRODUCTION_ENGINE)
    return (
        eager_on_supported_targets()
        .replace("any_deps_missing", dg.AutomationCondition.any_deps_missing().ignore(prod))
        .replace(
            "all_deps_blocking_checks_passed",
            dg.AutomationCondition.all_deps_blocking_checks_passed().ignore(prod),
        )
    )


@dg.asset(
    group_name=EVALUATION,
    owners=EVALUATION_OWNERS,
    kinds={"onnx", "polars"},
    partitions_def=TARGET_PARTITIONS,
    deps=[dg.AssetDep(PRODUCTION_ENGINE)],
    automation_condition=_eval_condition(),
    pool="cpu-heavy",
    code_version=f"eval-v1-{SETTINGS_SHA256[:8]}",
    freshness_policy=EVALUATION_FRESHNESS,
    description=per_target_description(
        "Evaluation of the packaged engine of one cell on the golden test split against the "
        "production model packaged for the same cell: COCO metrics (faster-coco-eval), per-class "
        "PR curves, confusion matrix, every slice of `slices.yaml` with deltas vs production "
        "(`slice_metrics.parquet`), calibration (ECE, D-ECE, Brier, reliability diagram, "
        "thresholds per class), robustness (COCO-C corruptions x severities 1-5 with mPC/rPC and "
        "decay slopes, sensor faults, temporal stress on replay), OOD probes (MSP, energy: "
        "AUROC/AUPR), prediction drift (Evidently), latency. Reports are written beside the "
        "model pack and logged to W&B (offline by default)."
    ),
)
def eval_report(
    context: dg.AssetExecutionContext,
    config: EvalConfig,
    engine: EngineRef,
    golden_dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    replay_log_bundles: ReplayBundleRef,
    target_catalog: TargetCatalog,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    # production_engine is a dependency, not a required input: a cell without a production
    # model is evaluated anyway (its production-relative gates are reported as skipped).
    production: EngineRef | None = read_value(
        artifact_store, context.instance, PRODUCTION_ENGINE, context.partition_key, TARGET_PARTITIONS
    )
    request = EvalRequest(
        cell=Cell.parse(context.partition_key),
        engine=engine,
        production=production,
        dataset=golden_dataset,
        slice_catalog=slice_catalog,
        replay=replay_log_bundles,
        profile=config.profile,
        challenge_suites=config.challenge_suites,
        log_wandb=config.log_wandb,
        threads=config.threads,
    )
    with failures():
        evaluation = evaluate_cell(
            artifact_store,
            request,
            target_catalog,
            default_evaluation_settings(),
            adas_home=AdasHome.from_env().root,
            log=context.log.info,
            warn=context.log.warning,
        )
    return eval_report_result(evaluation)


# --------------------------------------------------------------------------- quantization


with warnings.catch_warnings():  # MultiPartitionMapping is beta in Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    _ALL_PRECISIONS_OF_DEVICE = dg.MultiPartitionMapping(
        {DEVICE_DIMENSION: dg.DimensionPartitionMapping(DEVICE_DIMENSION, dg.IdentityPartitionMapping())}
    )


def _quant_condition() -> dg.AutomationCondition:
    """Runs after any evaluation of the device updates (never for devices nobody evaluated, and
    without waiting for precisions the device does not offer), supported cells only."""
    return (
        dg.AutomationCondition.any_deps_updated()
        .allow(dg.AssetSelection.assets("eval_report"))
        .since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & SupportedTargetCondition()
    ).with_label("after an evaluation of the device, supported targets only")


@dg.asset(
    group_name=EVALUATION,
    owners=EVALUATION_OWNERS,
    kinds={"polars"},
    partitions_def=TARGET_PARTITIONS,
    ins={"eval_report": dg.AssetIn(partition_mapping=_ALL_PRECISIONS_OF_DEVICE)},
    automation_condition=_quant_condition(),
    description=per_target_description(
        "Quantization sensitivity of one device: FP32 vs FP16 vs INT8 per slice on the same frames "
        "(AP and delta vs the highest precision evaluated, detection agreement), read from the "
        "stored predictions of every evaluated precision of the device. Slices losing more than "
        "1 AP point are flagged."
    ),
)
def quantization_sensitivity(
    context: dg.AssetExecutionContext,
    eval_report: dict[str, EvalReportRef],
    golden_dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    with failures():
        study = quantization_study(
            artifact_store,
            Cell.parse(context.partition_key),
            eval_report,
            golden_dataset,
            slice_catalog,
            TARGET_CATALOG,
            default_evaluation_settings(),
            warn=context.log.warning,
        )
    return quantization_result(study)


# --------------------------------------------------------------------------- regression gate


@dg.asset(
    group_name=EVALUATION,
    owners=EVALUATION_OWNERS,
    kinds={"python"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    code_version=f"gates-{GATES_SHA256[:12]}",
    description=per_target_description(
        "Green/red promotion signal from the versioned `config/gates.yaml`: weighted mAP >= "
        "production + 1.5 points, no critical-slice regression worse than 2% relative, p95 latency "
        "within the target's budget, ECE not worse than production beyond a tolerance. A red "
        "verdict is recorded (`passed: false`) with a blocking report naming the failing slices; "
        "the blocking `gate_is_green` check stops promotion."
    ),
)
def regression_gate(
    context: dg.AssetExecutionContext, eval_report: EvalReportRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    judgement = judge_cell(
        artifact_store, Cell.parse(context.partition_key), eval_report, warn=context.log.warning
    )
    return gate_result(judgement)


evaluation_assets = [eval_report, quantization_sensitivity, regression_gate]

__all__ = ["EvalConfig", "eval_report", "evaluation_assets", "quantization_sensitivity", "regression_gate"]
