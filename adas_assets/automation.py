"""Declarative automation that knows which device x precision cells exist in the catalog, and
whether this deployment's sensors and schedules start running."""

import os

import dagster as dg

from adas.cell import supported_cells
from adas_assets.partitions import partition_key
from resources.targets import TARGET_CATALOG


def default_sensor_status() -> dg.DefaultSensorStatus:
    """Sensors start on; `ADAS_SENSORS_DEFAULT=stopped` starts them off (staging, UI tests)."""
    stopped = os.environ.get("ADAS_SENSORS_DEFAULT", "running").lower() == "stopped"
    return dg.DefaultSensorStatus.STOPPED if stopped else dg.DefaultSensorStatus.RUNNING


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """Schedules follow the same switch as sensors."""
    running = default_sensor_status() == dg.DefaultSensorStatus.RUNNING
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


def automated_devices() -> list[str]:
    """Devices automation builds for in this deployment.

    `ADAS_AUTOMATION_DEVICES`: `all`, or a comma-separated list. Default: every device in
    production (GPU node pools exist there); locally only devices that need no GPU, so a laptop
    never queues TensorRT cells it cannot build (a person can still launch them by hand), and
    that targets.yaml does not keep off local automation (``local_automation: false``).
    """
    catalog = TARGET_CATALOG
    raw = os.environ.get("ADAS_AUTOMATION_DEVICES", "").strip()
    if raw == "all" or (not raw and os.environ.get("ADAS_ENV") == "production"):
        return catalog.devices
    if raw:
        devices = [d.strip() for d in raw.split(",") if d.strip()]
        for d in devices:
            catalog.target(d)  # unknown device: a KeyError naming targets.yaml's devices
        return devices
    return [d for d, t in catalog.targets.items() if not t.needs_gpu and t.local_automation]


class SupportedTargetCondition(dg.AutomationCondition):
    """True only for partitions whose device offers that precision in ``targets.yaml``, on
    devices this deployment automates (see :func:`automated_devices`).

    ANDed into every per-target condition so automation never requests (or retries) a cell
    the catalog marks unsupported. Evaluated in the code server (see the automation sensor),
    so it reads the same catalog the definitions were built from.
    """

    @property
    def name(self) -> str:
        return "supported_target"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        devices = set(automated_devices())
        keys = {partition_key(c) for c in supported_cells(TARGET_CATALOG) if c.device in devices}
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(keys)
        )


def eager_on_supported_targets() -> dg.AutomationCondition:
    """Eager automation restricted to catalog-supported cells of a device x precision asset,
    held back while an upstream blocking check (equivalence, contract smoke, gates) is red."""
    return (
        dg.AutomationCondition.eager()
        & SupportedTargetCondition()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, supported targets only, upstream blocking checks green")
