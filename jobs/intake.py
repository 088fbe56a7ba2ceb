"""Jobs of the intake group."""

import dagster as dg

from adas_assets.intake.assets import candidate_checkpoint

candidate_intake_job = dg.define_asset_job(
    "candidate_intake",
    selection=dg.AssetSelection.assets(candidate_checkpoint),
    description="Validate and store one candidate bundle from the inbox (launched by the inbox sensor).",
)
