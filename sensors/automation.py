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
    # Each interval adds up to one tick of latency per level of the graph (about six between a
    # bundle drop and its registry entry); evaluating the whole graph takes well under a second.
    minimum_interval_seconds=15,
)
