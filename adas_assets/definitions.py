"""The Dagster code location: every asset, check, job, sensor and schedule, wired to resources."""

from typing import Any

import dagster as dg

from adas_assets.evaluation import assets as evaluation
from adas_assets.evaluation.checks import evaluation_checks
from adas_assets.intake import assets as intake_assets
from adas_assets.packaging import assets as packaging_assets
from adas_assets.registry import assets as registry
from adas_assets.simulation import assets as simulation
from jobs import candidate_intake_job, golden_data_job
from jobs.evaluation import evaluation_job, evaluation_schedules
from jobs.registry import registry_jobs
from jobs.schedules import engine_rebuild_job, nightly_engine_rebuild
from resources import build_resources, run_executor
from sensors import candidate_inbox_sensor, per_target_automation_sensor
from sensors.challenge_suite import challenge_suite_sensor
from sensors.run_failure import run_failure_report


def make_definitions(
    resources: dict[str, Any], executor: dg.ExecutorDefinition | None = None
) -> dg.Definitions:
    """The whole code location against the given resources (tests pass temporary ones)."""
    return dg.Definitions(
        executor=executor,
        assets=[
            *dg.load_assets_from_modules([intake_assets, packaging_assets]),
            *evaluation.evaluation_assets,
            *simulation.simulation_assets,
            *registry.registry_assets,
        ],
        asset_checks=[*evaluation_checks, *simulation.simulation_checks],
        jobs=[
            candidate_intake_job,
            golden_data_job,
            engine_rebuild_job,
            evaluation_job,
            *registry_jobs,
        ],
        sensors=[
            candidate_inbox_sensor,
            per_target_automation_sensor,
            run_failure_report,
            challenge_suite_sensor,
        ],
        schedules=[nightly_engine_rebuild, *evaluation_schedules],
        resources=resources,
    )


defs = make_definitions(build_resources(), run_executor())
