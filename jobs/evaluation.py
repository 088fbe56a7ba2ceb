"""The evaluation job and the schedules that re-evaluate every built engine."""

from typing import Any

import dagster as dg

from adas.evaluation.inputs import challenge_suites_root, list_suites
from adas.settings import AdasHome
from adas_assets.automation import default_schedule_status
from adas_assets.cadence import NIGHTLY_REGRESSION_CRON, SCHEDULE_TIMEZONE, WEEKLY_FULL_LIBRARY_CRON
from adas_assets.evaluation.assets import eval_report, quantization_sensitivity, regression_gate
from adas_assets.partitions import TARGET_PARTITIONS, supported_partition_keys
from resources.targets import TARGET_CATALOG

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(eval_report, quantization_sensitivity, regression_gate),
    partitions_def=TARGET_PARTITIONS,
    description="Re-evaluate engines: eval report, quantization sensitivity and regression gate of a cell.",
)


def evaluated_cells(instance: dg.DagsterInstance) -> list[str]:
    """Supported cells whose engine exists: what a re-evaluation can run on."""
    done = {str(d) for d in instance.get_materialized_partitions(dg.AssetKey("engine"))}
    return [str(k) for k in supported_partition_keys(TARGET_CATALOG) if str(k) in done]


def eval_run_config(profile: str, suites: list[str]) -> dict[str, Any]:
    """Run config of ``evaluation_job`` for one profile and these challenge suites."""
    return {"ops": {"eval_report": {"config": {"profile": profile, "challenge_suites": suites}}}}


def _scheduled(
    context: dg.ScheduleEvaluationContext, profile: str, with_suites: bool
) -> list[dg.RunRequest] | dg.SkipReason:
    cells = evaluated_cells(context.instance)
    if not cells:
        return dg.SkipReason("no engine built yet: nothing to evaluate")
    root = challenge_suites_root(AdasHome.from_env().root)
    suites = [p.name for p in list_suites(root)] if with_suites else []
    return [
        dg.RunRequest(
            partition_key=cell,
            run_config=eval_run_config(profile, suites),
            tags={"adas/trigger": f"schedule-{profile}"},
        )
        for cell in cells
    ]


def evaluation_schedule(
    name: str, cron: str, description: str, profile: str, *, with_suites: bool
) -> dg.ScheduleDefinition:
    """A schedule of ``evaluation_job`` that evaluates every built cell with ``profile``."""

    @dg.schedule(
        job=evaluation_job,
        cron_schedule=cron,
        execution_timezone=SCHEDULE_TIMEZONE,
        default_status=default_schedule_status(),
        name=name,
        description=description,
    )
    def _evaluation_schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        return _scheduled(context, profile, with_suites=with_suites)

    return _evaluation_schedule


nightly_regression_evaluation = evaluation_schedule(
    "nightly_regression_evaluation",
    NIGHTLY_REGRESSION_CRON,
    "Nightly regression: every built engine re-evaluated against production (standard profile).",
    "standard",
    with_suites=False,
)
weekly_full_library_evaluation = evaluation_schedule(
    "weekly_full_library_evaluation",
    WEEKLY_FULL_LIBRARY_CRON,
    "Weekly full-library evaluation: full robustness profile plus every challenge suite.",
    "full",
    with_suites=True,
)

evaluation_schedules = [nightly_regression_evaluation, weekly_full_library_evaluation]
