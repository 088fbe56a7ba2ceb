"""The Dagster code location: every asset, check, job, sensor and schedule, wired to resources."""

import dagster as dg

from adas_assets.intake import assets as intake_assets
from jobs import candidate_intake_job
from resources import build_resources
from sensors import candidate_inbox_sensor, per_target_automation_sensor

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([intake_assets]),
    jobs=[candidate_intake_job],
    sensors=[candidate_inbox_sensor, per_target_automation_sensor],
    resources=build_resources(),
)
