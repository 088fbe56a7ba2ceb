"""A blocking check gates downstream automation per target cell.

Two cells' runs overlap as they do under the daemon (two runs at a time): x86-cpu|int8
materializes first, then x86-cpu|fp32, then fp32's check finishes, then int8's, with automation
ticks in between. Each cell's downstream asset must be requested once its own check passed.
"""

import threading

import dagster as dg
import pytest

from adas_assets.automation import eager_on_supported_targets
from adas_assets.partitions import TARGET_PARTITIONS, per_target_check

CELLS = ["x86-cpu|fp32", "x86-cpu|int8"]
_NO_COMPUTE_LOGS = {
    "module": "dagster._core.storage.noop_compute_log_manager",
    "class": "NoOpComputeLogManager",
}


def _graph(events: dict[str, tuple[threading.Event, threading.Event]]):  # type: ignore[no-untyped-def]
    spec = per_target_check("smoke", asset="repository", blocking=True, description="smoke test")

    @dg.asset(partitions_def=TARGET_PARTITIONS, check_specs=[spec], dagster_type=dg.Any)
    def repository(context: dg.AssetExecutionContext):  # type: ignore[no-untyped-def]
        materialized, release = events[context.partition_key]
        yield dg.Output(context.partition_key)
        materialized.set()  # like the Triton smoke test: the check runs after the output is stored
        assert release.wait(30)
        yield dg.AssetCheckResult(check_name="smoke", passed=True)

    @dg.asset(partitions_def=TARGET_PARTITIONS, automation_condition=eager_on_supported_targets())
    def pack(repository: str) -> str:
        return repository

    return repository, pack


def _requested_after_overlapping_runs() -> list[str]:
    events = {cell: (threading.Event(), threading.Event()) for cell in CELLS}
    repository, pack = _graph(events)
    defs = dg.Definitions(assets=[repository, pack])
    # No compute-log capture: two runs in threads of one process would each redirect the process's
    # stdout through a `tail -F` of their own, and one run's cleanup then waits up to 30 s on the
    # other's (seen on a loaded 2-core CI machine); the logs are not what this test is about.
    with dg.instance_for_test(overrides={"compute_logs": _NO_COMPUTE_LOGS}) as instance:
        cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
        threads = {
            cell: threading.Thread(
                target=lambda c=cell: dg.materialize([repository], instance=instance, partition_key=c)
            )
            for cell in CELLS
        }
        requested: set[str] = set()

        def tick() -> None:  # the daemon ticks whenever it likes, also in between
            nonlocal cursor
            result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
            cursor = result.cursor
            requested.update(result.get_requested_partitions(pack.key))

        for cell in ("x86-cpu|int8", "x86-cpu|fp32"):  # materialized in this order...
            threads[cell].start()
            assert events[cell][0].wait(30)
            tick()
        for cell in ("x86-cpu|fp32", "x86-cpu|int8"):  # ...checked in the other
            events[cell][1].set()
            threads[cell].join(30)
            tick()
        tick()
    return sorted(requested)


def test_each_cell_is_released_by_its_own_check_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAS_AUTOMATION_DEVICES", raising=False)
    monkeypatch.delenv("ADAS_ENV", raising=False)
    assert _requested_after_overlapping_runs() == CELLS
