"""The declarative-automation sensor.

Conditions include a Python condition (`SupportedTargetCondition`) that reads the target
catalog, so they are evaluated in the code server rather than the daemon.
"""

import dagster as dg

per_target_automation_sensor = dg.AutomationConditionSensorDefinition(
    "per_target_automation",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    use_user_code_server=True,
    minimum_interval_seconds=30,
)
