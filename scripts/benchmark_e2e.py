"""End-to-end: time from dropping the candidate bundle to the final verdict of every supported CPU cell.

Runs on a fresh ADAS_HOME with the golden data already materialized (data generation is not
part of the measured path), then: drop the bundle, tick the inbox sensor, tick declarative
automation until idle. Prints the wall time, the sum of the compute inside asset steps, and
the orchestration overhead (wall - compute) as a ratio of the total.

    python scripts/benchmark_e2e.py [--size demo] [--daemon] [--write]

``--daemon`` measures the path a user watches in the UI: `dagster dev` (webserver + daemon) runs
the real sensors; the script only drops the bundle and waits for a registry entry on every
supported CPU cell. Without it, the inbox sensor and the automation conditions are ticked
in-process and runs execute one after another.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402
from dagster._core.scheduler.instigation import InstigatorType  # noqa: E402

from adas.packaging.staging import cpu_model  # noqa: E402
from adas.settings import DEMO_BUNDLES_DIR, AdasHome  # noqa: E402
from adas_assets.definitions import make_definitions  # noqa: E402
from jobs.automation_driver import AutomationDriver, drop_and_drive, drop_bundle  # noqa: E402
from jobs.schedules import rebuild_cells  # noqa: E402
from resources import build_resources  # noqa: E402
from resources.dagster_dev import dagster_dev  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks  # noqa: E402


def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> dict[str, float]:
    """Seconds inside each step (asset), summed over the runs."""
    totals: dict[str, float] = {}
    for run_id in run_ids:
        for step in instance.get_run_step_stats(run_id):
            if step.start_time and step.end_time:
                totals[step.step_key] = totals.get(step.step_key, 0.0) + step.end_time - step.start_time
    return totals


def _sensor_has_ticked(instance: dg.DagsterInstance, name: str) -> bool:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name and instance.get_ticks(
            state.instigator_origin_id, state.selector_id, limit=1
        ):
            return True
    return False


def drive_with_daemon(
    home: AdasHome, golden: Callable[[dg.DagsterInstance], None], timeout_s: float
) -> tuple[float, list[str], list[str]]:
    """`dagster dev` runs everything; returns (drop -> last registry entry s, run ids, failed run ids)."""

    cells = set(rebuild_cells())
    log_path = home.root / "dagster-dev.log"
    print(f"dagster dev starting (log: {log_path})...", flush=True)
    with dagster_dev(log_path=log_path) as url, dg.DagsterInstance.get() as instance:
        print(f"  UI at {url}; waiting for the automation sensor's first evaluation...", flush=True)
        deadline = time.time() + 180
        while not _sensor_has_ticked(instance, "per_target_automation") and time.time() < deadline:
            time.sleep(2)
        golden(instance)  # automation reacts to it (production engines) inside the timed part too
        t0, dropped_at = time.perf_counter(), datetime.now(UTC)
        drop_bundle(DEMO_BUNDLES_DIR / "candidate", home.inbox, "candidate")
        print(f"  bundle dropped; waiting for registry entries on {', '.join(sorted(cells))}", flush=True)
        wall, last = None, ""
        while time.perf_counter() - t0 < timeout_s:
            runs = instance.get_runs(filters=dg.RunsFilter(created_after=dropped_at))
            failed = [r.run_id for r in runs if r.status == dg.DagsterRunStatus.FAILURE]
            done = cells & set(instance.get_materialized_partitions(dg.AssetKey("registry_entry")))
            status = f"{len(runs)} runs, {len(failed)} failed, registry entries {sorted(done)}"
            if status != last:
                print(f"  {time.perf_counter() - t0:6.0f} s: {status}", flush=True)
                last = status
            if wall is None and done == cells:
                wall = time.perf_counter() - t0
            active = [r for r in runs if not r.is_finished]
            if failed or (wall is not None and not active):
                break
            time.sleep(3)
        runs = instance.get_runs(filters=dg.RunsFilter(created_after=dropped_at))
        if wall is None:
            print(f"  no verdict on every cell after {time.perf_counter() - t0:.0f} s", flush=True)
            wall = time.perf_counter() - t0
            failed = failed or ["(timeout)"]
        return wall, [r.run_id for r in runs], failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="demo")
    parser.add_argument(
        "--daemon", action="store_true", help="run through `dagster dev` (webserver + daemon)"
    )
    parser.add_argument(
        "--timeout", type=float, default=2700, help="--daemon: give up after this many seconds"
    )
    parser.add_argument("--write", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args()
    home = AdasHome(Path(tempfile.mkdtemp(prefix="adas-e2e-")))
    prepare_local_instance(home)

    defs = make_definitions(build_resources("local", home))

    def golden(instance: dg.DagsterInstance) -> None:
        print("golden data (not timed)...", flush=True)
        ok = defs.resolve_job_def("golden_data").execute_in_process(
            instance=instance,
            run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": args.size}}}),
        )
        assert ok.success

    if args.daemon:
        wall, run_ids, failed = drive_with_daemon(home, golden, args.timeout)
        with dg.DagsterInstance.get() as instance:
            steps = step_seconds(instance, run_ids)
        how = "`dagster dev` (webserver + daemon): real inbox and automation sensors, queued runs in subprocesses"
    else:
        with dg.DagsterInstance.get() as instance:
            driver = AutomationDriver(defs, instance, log=lambda m: print(m, flush=True))
            driver.prime()
            golden(instance)
            # No second prime here: it would swallow the production_engine requests the golden data
            # just triggered (eager conditions fire once per change), and no cell would get a verdict.
            t0 = time.perf_counter()
            driven = drop_and_drive(
                driver, DEMO_BUNDLES_DIR / "candidate", home.inbox, "candidate", sensor_log=lambda m: None
            )
            wall = time.perf_counter() - t0
            run_ids = [r.run_id for r in driven.runs]
            failed = [r.run_id for r in driven.runs if not r.success]
            steps = step_seconds(instance, run_ids)
        how = "in-process driver (sensor tick + automation ticks), runs executed serially"
    compute = sum(steps.values())
    overhead = wall - compute
    top = sorted(steps.items(), key=lambda kv: -kv[1])[:6]
    lines = [
        f"runs: {len(run_ids)} ({len(failed)} failed)",
        f"bundle drop -> final verdict (all supported CPU cells): {wall:.1f} s",
        f"compute inside asset steps (sum):                        {compute:.1f} s",
        f"orchestration overhead (wall - compute):                 {overhead:.1f} s = {overhead / wall:.1%} of total",
        "largest steps: " + ", ".join(f"{k} {v:.0f} s" for k, v in top),
    ]
    print("\n".join(lines))
    if args.write:
        command = f"python scripts/benchmark_e2e.py --size {args.size}" + (" --daemon" if args.daemon else "")
        append_to_benchmarks(
            f"\n## End to end (bundle drop -> verdict)\n\n- **Machine:** {cpu_model()}, {os.cpu_count()} cores; "
            f"**date:** {datetime.now(UTC):%Y-%m-%d}; dataset size `{args.size}`; `{command}`.\n"
            f"- {how}; SQLite instance.\n\n" + "\n".join(f"    {line}" for line in lines) + "\n"
        )
    shutil.rmtree(home.root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
