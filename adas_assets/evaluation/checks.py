"""Evaluation checks: dataset integrity on the golden dataset, and the blocking regression gate."""

from collections.abc import Iterator

import dagster as dg

from adas.evaluation.config import default_evaluation_settings
from adas.evaluation.integrity import INTEGRITY_CHECKS
from adas.evaluation.refs import GateRef
from adas.evaluation.usecases import dataset_integrity as check_dataset
from adas.intake.refs import DatasetRef
from adas_assets.evaluation.presenters import gate_check_result, integrity_check_results
from adas_assets.partitions import per_target_asset_check
from resources.artifact_store import ArtifactStoreParam

GOLDEN_DATASET = dg.AssetKey("golden_dataset")
REGRESSION_GATE = dg.AssetKey("regression_gate")
CHECK_DESCRIPTIONS = {
    "manifest_schema": "Great Expectations: manifests conform to the schema and value ranges (ids, tags, frame size, boxes).",
    "no_scene_leakage": "No scene id appears in two splits (train/val/test/replay).",
    "scenario_separation": "Scenarios held out of training splits (config/evaluation.yaml) stay out.",
    "temporal_separation": "Consecutive golden frames of a scene are far enough apart; timestamps increase.",
}


@dg.multi_asset_check(
    specs=[
        dg.AssetCheckSpec(name, asset=GOLDEN_DATASET, blocking=True, description=CHECK_DESCRIPTIONS[name])
        for name in INTEGRITY_CHECKS
    ],
    ins={"golden_dataset": dg.AssetIn(key=GOLDEN_DATASET)},
    name="dataset_integrity",
    compute_kind="great_expectations",
)
def dataset_integrity(
    golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam
) -> Iterator[dg.AssetCheckResult]:
    """Dataset integrity and leakage guards: blocking, so nothing downstream of a bad manifest runs."""
    report = check_dataset(artifact_store, golden_dataset, default_evaluation_settings().integrity)
    yield from integrity_check_results(report, GOLDEN_DATASET)


@per_target_asset_check(
    REGRESSION_GATE,
    name="gate_is_green",
    blocking=True,
    # Requested with its asset (eager: the asset "will be requested" on the same tick), so the
    # check runs in the asset's run and blocks what is downstream of it there.
    automation_condition=dg.AutomationCondition.eager(),
    description="The regression gate is green. Blocking: promotion downstream of a red gate does not run.",
)
def gate_is_green(regression_gate: GateRef) -> dg.AssetCheckResult:
    return gate_check_result(regression_gate)


evaluation_checks = [dataset_integrity, gate_is_green]

__all__ = ["INTEGRITY_CHECKS", "dataset_integrity", "evaluation_checks", "gate_is_green"]
