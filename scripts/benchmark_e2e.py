"""End-to-end: time from dropping the candidate bundle to the final verdict of every supported CPU cell.

Runs on a fresh ADAS_HOME with the golden data already materialized (data generation is not
part of the measured path), then: drop the bundle, tick the inbox sensor, tick declarative
automation until idle. Prints the wall time, the sum of the compute inside asset steps, and
the orchestration overhead (wall - compute) as a ratio of the total.

    python scripts/benchmark_e2e.py [--size demo|tiny] [--write]
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from adas_assets.settings import DEMO_BUNDLES_DIR, AdasHome  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402


def step_seconds(instance: dg.DagsterInstance, run_ids: list[str]) -> float:
    total = 0.0
    for run_id in run_ids:
        for step in instance.get_run_step_stats(run_id):
            if step.start_time and step.end_time:
                total += step.end_time - step.start_time
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="demo")
    parser.add_argument("--write", action="store_true", help="append the result to BENCHMARKS.md")
    args = parser.parse_args()
    home = AdasHome(Path(tempfile.mkdtemp(prefix="adas-e2e-")))
    prepare_local_instance(home)
    from adas_assets.definitions import make_definitions
    from jobs.automation_driver import AutomationDriver, drop_and_drive
    from resources import build_resources

    defs = make_definitions(build_resources("local", home))
    with dg.DagsterInstance.get() as instance:
        driver = AutomationDriver(defs, instance, log=lambda m: print(m, flush=True))
        driver.prime()
        print("golden data (not timed)...", flush=True)
        ok = defs.resolve_job_def("golden_data").execute_in_process(
            instance=instance,
            run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": args.size}}}),
        )
        assert ok.success
        # No second prime here: it would swallow the production_engine requests the golden data
        # just triggered (eager conditions fire once per change), and no cell would get a verdict.
        t0 = time.perf_counter()
        driven = drop_and_drive(
            driver, DEMO_BUNDLES_DIR / "candidate", home.inbox, "candidate", sensor_log=lambda m: None
        )
        wall = time.perf_counter() - t0
        run_ids = [r.run_id for r in driven.runs]
        failed = [r.run_id for r in driven.runs if not r.success]
        compute = step_seconds(instance, run_ids)
    overhead = wall - compute
    lines = [
        f"runs: {len(run_ids)} ({len(failed)} failed)",
        f"bundle drop -> final verdict (all supported CPU cells): {wall:.1f} s",
        f"compute inside asset steps (sum):                        {compute:.1f} s",
        f"orchestration overhead (wall - compute):                 {overhead:.1f} s = {overhead / wall:.1%} of total",
    ]
    print("\n".join(lines))
    if args.write:
        from adas_assets.packaging.staging import cpu_model

        cpu = cpu_model()
        with open(REPO / "BENCHMARKS.md", "a") as f:
            f.write(
                f"\n## End to end (bundle drop -> verdict)\n\n- **Machine:** {cpu}, {os.cpu_count()} cores; "
                f"**date:** {datetime.now(UTC):%Y-%m-%d}; dataset size `{args.size}`; "
                "`python scripts/benchmark_e2e.py --size " + args.size + "`.\n"
                "- In-process driver (sensor tick + automation ticks), SQLite instance, runs executed serially.\n\n"
                + "\n".join(f"    {line}" for line in lines)
                + "\n"
            )
    shutil.rmtree(home.root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
