"""Drive declarative automation in-process: the same conditions the automation sensor evaluates.

`make demo` uses this so a fresh laptop needs no running daemon: each tick evaluates every
asset's automation condition against the instance and executes what it requests, one run per
partition, until nothing more is requested. With `dagster dev` running, the
`per_target_automation` sensor does exactly the same on its own.

The inbox half of the no-click path lives here too: :func:`drop_bundle` publishes a bundle the
way an uploader should (copy under a hidden name, then rename), :func:`tick_inbox_sensor` ticks
the real `candidate_inbox_sensor` and executes the intake runs it requests, and
:func:`drop_and_drive` chains both with :meth:`AutomationDriver.run_until_idle`.
"""

import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from sensors.candidate_inbox import candidate_inbox_sensor


class AutomationDriver:
    """Holds the evaluation cursor between ticks, like the automation sensor does on the instance.

    Eager conditions fire on *changes since the previous evaluation*, so call :meth:`prime`
    before the changes (e.g. a new candidate) that automation should react to.
    """

    def __init__(
        self, defs: dg.Definitions, instance: dg.DagsterInstance, log: Callable[[str], None] = print
    ):
        self.defs, self.instance, self.log = defs, instance, log
        self.cursor = None
        self.job = defs.resolve_implicit_global_asset_job_def()
        self.keys = list(defs.resolve_asset_graph().get_all_asset_keys())

    def _evaluate(self) -> dict[str | None, list[dg.AssetKey]]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = result.cursor
        by_partition: dict[str | None, list[dg.AssetKey]] = defaultdict(list)
        for key in self.keys:
            for partition in result.get_requested_partitions(key):
                by_partition[partition].append(key)
        return by_partition

    def prime(self) -> None:
        """Record the current state without executing anything."""
        self._evaluate()

    def run_until_idle(self, max_ticks: int = 40) -> list[dg.ExecuteInProcessResult]:
        """Tick until a tick requests nothing; return every run executed (failed ones included)."""
        runs: list[dg.ExecuteInProcessResult] = []
        for tick in range(1, max_ticks + 1):
            by_partition = self._evaluate()
            if not by_partition:
                self.log(f"  automation tick {tick}: nothing requested; idle")
                return runs
            for partition, selected in sorted(by_partition.items(), key=lambda kv: kv[0] or ""):
                names = ", ".join(k.to_user_string() for k in selected)
                self.log(f"  automation tick {tick}: {names}" + (f" [{partition}]" if partition else ""))
                run = self.job.execute_in_process(
                    instance=self.instance,
                    asset_selection=selected,
                    partition_key=partition,
                    tags={"dagster/from_automation_condition": "true", "adas/driver": "in-process"},
                    raise_on_error=False,
                )
                runs.append(run)
                if not run.success:
                    failed = [e.step_key for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
                    self.log(f"    run {run.run_id[:8]} failed at {failed}; see it in the UI")
        self.log(f"  stopped after {max_ticks} ticks")
        return runs


def drop_bundle(src: Path, inbox: Path, name: str) -> Path:
    """Publish ``src`` as ``inbox/name`` atomically (copy to a hidden name, then rename)."""
    staging = inbox / f".{name}.incoming"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(src, staging)
    target = inbox / name
    staging.rename(target)
    # The inbox waits for a bundle to be quiet before judging it; age this one past that window.
    old = time.time() - 60
    for p in [target, *target.rglob("*")]:
        os.utime(p, (old, old))
    return target


def tick_inbox_sensor(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    ticks: int = 1,
    log: Callable[[str], None] = print,
) -> list[dg.ExecuteInProcessResult]:
    """Tick `candidate_inbox_sensor` ``ticks`` times (its cursor carried between ticks, as the
    daemon does) and execute each intake run it requests (a rejected bundle's run fails, naming
    why, and the next one still runs)."""
    job = defs.resolve_job_def("candidate_intake")
    runs: list[dg.ExecuteInProcessResult] = []
    cursor = None
    for tick in range(1, ticks + 1):
        with dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            definitions=defs,
            resources=defs.resources,
            sensor_name="candidate_inbox_sensor",
        ) as ctx:
            outcome = candidate_inbox_sensor(ctx)
            cursor = outcome.cursor if isinstance(outcome, dg.SensorResult) else ctx.cursor
        if isinstance(outcome, dg.SkipReason):
            log(f"  tick {tick}: skipped: {outcome.skip_message}")
            continue
        for request in outcome.run_requests:
            log(f"  tick {tick}: intake run requested for {request.tags.get('adas/bundle', request.run_key)}")
            run = job.execute_in_process(
                instance=instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
            )
            runs.append(run)
            if not run.success:
                log(f"  tick {tick}: {request.tags.get('adas/bundle')} rejected: {_failure_reason(run)}")
    return runs


def _failure_reason(run: dg.ExecuteInProcessResult) -> str:
    for event in run.all_events:
        if event.event_type_value == "STEP_FAILURE":
            message = event.event_specific_data.error.to_string()  # type: ignore[union-attr]
            return next(
                (line for line in message.splitlines() if "rejected" in line), message.splitlines()[0]
            )
    return "run failed"


@dataclass
class DriveResult:
    """The runs one bundle drop caused: its intake, then everything automation requested."""

    intake_runs: list[dg.ExecuteInProcessResult]
    automation_runs: list[dg.ExecuteInProcessResult]

    @property
    def runs(self) -> list[dg.ExecuteInProcessResult]:
        return [*self.intake_runs, *self.automation_runs]


def drop_and_drive(
    driver: AutomationDriver,
    bundle: Path,
    inbox: Path,
    name: str,
    sensor_log: Callable[[str], None] = print,
) -> DriveResult:
    """The no-click path: drop ``bundle`` into the inbox, tick the inbox sensor once and run its
    intake, then tick automation until idle.

    Prime ``driver`` before the changes it should react to: before the golden data if automation
    should also package the production baseline (priming again after the golden data would
    swallow those requests)."""
    drop_bundle(bundle, inbox, name)
    intake = tick_inbox_sensor(driver.defs, driver.instance, log=sensor_log)
    return DriveResult(intake_runs=intake, automation_runs=driver.run_until_idle())
