"""The no-click loop through the real ``dagster-daemon`` (#16): a bundle dropped into the inbox of
a fresh instance reaches a registry entry on both CPU cells with nothing but the deployed sensors,
automation and run queue. The order of what the instance records is asserted, nothing about time
(``scripts/benchmark_loop.py`` reports the timings)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from adas.settings import DEMO_BUNDLES_DIR
from tests.operations.daemon_loop import CELL_CHAIN, CPU_CELLS, GATES, daemon_loop

pytestmark = [pytest.mark.slow, pytest.mark.nightly]


def _first(instance: dg.DagsterInstance, key: str, cell: str | None) -> dg.EventLogRecord:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(key), asset_partitions=[cell] if cell else None),
        limit=100,
        ascending=True,
    ).records
    assert records, f"no {key} materialization{f' for {cell}' if cell else ''}"
    return records[0]


def test_a_dropped_bundle_reaches_both_registry_entries_through_the_real_daemon(tmp_path: Path) -> None:
    with daemon_loop(tmp_path, DEMO_BUNDLES_DIR / "candidate", "candidate") as loop:
        with dg.DagsterInstance.get() as instance:
            intake = _first(instance, "candidate_checkpoint", None)
            assert intake.timestamp >= loop.dropped_at
            intake_run = instance.get_run_by_id(intake.run_id)
            assert (
                intake_run is not None
                and intake_run.tags.get("dagster/sensor_name") == "candidate_inbox_sensor"
            )
            for cell in CPU_CELLS:
                chain = [_first(instance, key, cell) for key in CELL_CHAIN]
                times = [intake.timestamp, *(r.timestamp for r in chain)]
                assert times == sorted(times), (
                    f"{cell}: {list(zip(('candidate_checkpoint', *CELL_CHAIN), times, strict=True))}"
                )
                entry = chain[-1]
                for gate in GATES:
                    assert _first(instance, gate, cell).timestamp < entry.timestamp, (cell, gate)
                # Every step after the intake was requested by automation, none by hand.
                for record in chain:
                    run = instance.get_run_by_id(record.run_id)
                    assert run is not None
                    assert run.tags.get("dagster/sensor_name") == "per_target_automation", (cell, run.tags)
        # The blocking gate checks ran, in the cell's run, before its registry entry.
        for cell in CPU_CELLS:
            steps = {s.asset: s for s in loop.steps if s.partition == cell}
            for check in ("regression_gate_gate_is_green", "sim_verdict_sim_gate_is_green"):
                assert check in steps, f"{cell}: {check} never ran"
                assert steps[check].end <= steps["registry_entry"].start, (cell, check)
