"""Drive declarative automation in-process: the same conditions the automation sensor evaluates.

`make demo` uses this so a fresh laptop needs no running daemon: each tick evaluates every
asset's automation condition against the instance and executes what it requests, one run per
partition, until nothing more is requested. With `dagster dev` running, the
`per_target_automation` sensor does exactly the same on its own.
"""

from collections import defaultdict
from collections.abc import Callable

import dagster as dg


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
