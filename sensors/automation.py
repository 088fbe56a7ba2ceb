"""The declarative-automation sensor.

Conditions include a Python condition (`SupportedTargetCondition`) that reads the target
catalog, so they are evaluated in the code server rather than the daemon.
"""

import dagster as dg

from adas_assets.automation import default_sensor_status

per_target_automation_sensor = dg.AutomationConditionSensorDefinition(
    "per_target_automation",
    target=dg.AssetSelection.all(),
    default_status=default_sensor_status(),
    use_user_code_server=True,
    # Requests spanning both CPU cells go out as an asset backfill, which waits for the backfill
    # daemon's next loop (~15 s each time; BENCHMARKS "No-click loop"). emit_backfills=False
    # would launch one run per partition from this tick (130 s instead of 160 s measured) but
    # leaves out the blocking gate checks, which have no automation condition of their own.
    # Each interval adds up to one tick of latency per run the loop launches (intake, production
    # baseline, export, each cell; BENCHMARKS "No-click loop"); evaluating the whole graph takes
    # well under a second.
    minimum_interval_seconds=5,
)
