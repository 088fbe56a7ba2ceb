from sensors.automation import per_target_automation_sensor
from sensors.candidate_inbox import candidate_inbox_sensor

__all__ = ["candidate_inbox_sensor", "per_target_automation_sensor"]
