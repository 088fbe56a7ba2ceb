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
    # One run per requested cell, launched on this tick. As asset backfills (the default), requests
    # spanning both CPU cells waited for the backfill daemon's next loop (~15 s each time;
    # BENCHMARKS "No-click loop"). The blocking gate checks have conditions of their own, so they
    # are requested with their assets and run in the same run.
    emit_backfills=False,
)
