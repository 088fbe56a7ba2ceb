"""Nightly rebuild of engines against the current runtime stack."""

import dagster as dg

from adas.cell import supported_cells
from adas_assets.automation import automated_devices, default_schedule_status
from adas_assets.cadence import NIGHTLY_ENGINE_REBUILD_CRON, SCHEDULE_TIMEZONE
from adas_assets.partitions import partition_key
from resources.targets import TARGET_CATALOG

engine_rebuild_job = dg.define_asset_job(
    "engine_rebuild",
    # The production baseline is rebuilt too: evaluation compares engines built by one stack.
    selection=dg.AssetSelection.assets(
        "engine", "production_engine", "triton_model_repository", "model_pack"
    ),
    description="Rebuild the candidate's engines, Triton repositories and packs, and the production baseline's engine (one run per cell).",
)


def rebuild_cells() -> list[str]:
    """Every catalog-supported cell on the devices this deployment automates."""
    devices = set(automated_devices())
    return [partition_key(c) for c in supported_cells(TARGET_CATALOG) if c.device in devices]


@dg.schedule(
    job=engine_rebuild_job,
    cron_schedule=NIGHTLY_ENGINE_REBUILD_CRON,
    execution_timezone=SCHEDULE_TIMEZONE,
    default_status=default_schedule_status(),
    description="01:00 UTC: rebuild every automated cell's engine against the runtime stack now installed.",
)
def nightly_engine_rebuild(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    date = context.scheduled_execution_time.strftime("%Y-%m-%d")
    return [
        dg.RunRequest(
            run_key=f"engine-rebuild-{date}-{cell}",
            partition_key=cell,
            tags={"adas/trigger": "nightly-engine-rebuild"},
        )
        for cell in rebuild_cells()
    ]
