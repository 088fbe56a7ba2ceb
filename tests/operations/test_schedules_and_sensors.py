"""Schedules and sensors, evaluated tick by tick on a temporary instance."""

import json
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from adas.storage import LocalArtifactStore
from adas_assets.definitions import make_definitions
from jobs.schedules import nightly_engine_rebuild
from resources import build_resources
from sensors.run_failure import run_failure_report


def test_nightly_engine_rebuild_requests_one_run_per_automated_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADAS_AUTOMATION_DEVICES", raising=False)
    monkeypatch.delenv("ADAS_ENV", raising=False)
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 23, 1, tzinfo=UTC))
    requests = nightly_engine_rebuild(context)
    assert sorted(r.partition_key for r in requests) == ["x86-cpu|fp32", "x86-cpu|int8"]
    assert {r.run_key for r in requests} == {
        "engine-rebuild-2026-11-23-x86-cpu|fp32",
        "engine-rebuild-2026-11-23-x86-cpu|int8",
    }
    monkeypatch.setenv("ADAS_AUTOMATION_DEVICES", "all")
    cells = {r.partition_key for r in nightly_engine_rebuild(context)}
    assert "t4|int8" in cells and "orin|fp32" not in cells and "x86-cpu|fp16" not in cells


def test_schedules_and_sensors_are_on_by_default() -> None:
    defs = make_definitions(build_resources("local"))
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in defs.schedules)
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)


@dg.asset
def broken_asset() -> None:
    raise ValueError("calibration shard is empty for slice 'fog'")


def test_run_failure_sensor_writes_a_blocking_report(adas_home: Path) -> None:
    store = LocalArtifactStore(root=str(adas_home / "artifacts"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([broken_asset], instance=instance, raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.is_run_failure)
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_report",
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=failure,
            resources={"artifact_store": store},
        ).for_run_failure()
        run_failure_report(context)
    report = json.loads(store.get_bytes(f"reports/run-failures/{run.run_id}.json"))
    assert report["blocking"] is True, report
    # The failed step is named, by step stats or by Dagster's run-failure message.
    assert "broken_asset" in report["failed_steps"] or "broken_asset" in report["error"], report
    md = store.get_bytes(f"reports/run-failures/{run.run_id}.md").decode()
    assert "Blocking" in md and "broken_asset" in md
