"""The declarative-automation sensor.

Conditions include a Python condition (`SupportedTargetCondition`) that reads the target
catalog, so they are evaluated in the code server rather than the daemon.
"""

import os

import dagster as dg


def default_sensor_status() -> dg.DefaultSensorStatus:
    """Sensors start on; `ADAS_SENSORS_DEFAULT=stopped` starts them off (staging, UI tests)."""
    stopped = os.environ.get("ADAS_SENSORS_DEFAULT", "running").lower() == "stopped"
    return dg.DefaultSensorStatus.STOPPED if stopped else dg.DefaultSensorStatus.RUNNING


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """Schedules follow the same switch as sensors."""
    running = default_sensor_status() == dg.DefaultSensorStatus.RUNNING
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


per_target_automation_sensor = dg.AutomationConditionSensorDefinition(
    "per_target_automation",
    target=dg.AssetSelection.all(),
    default_status=default_sensor_status(),
    use_user_code_server=True,
    # Each interval adds up to one tick of latency per level of the graph (about six between a
    # bundle drop and its registry entry); evaluating the whole graph takes well under a second.
    minimum_interval_seconds=15,
)
