"""Jobs of the intake group."""

import dagster as dg

from adas_assets.intake.assets import candidate_checkpoint

candidate_intake_job = dg.define_asset_job(
    "candidate_intake",
    selection=dg.AssetSelection.assets(candidate_checkpoint),
    description="Validate and store one candidate bundle from the inbox (launched by the inbox sensor).",
)

golden_data_job = dg.define_asset_job(
    "golden_data",
    selection=dg.AssetSelection.groups("intake") - dg.AssetSelection.assets(candidate_checkpoint),
    description="Target catalog, simulated golden dataset, slices, calibration shard and replay logs.",
)
