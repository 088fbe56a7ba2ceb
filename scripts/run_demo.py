"""The main job, end to end on embedded defaults (local files, SQLite, CPU targets).

Runs on the same Dagster instance that `make ui` opens, so every run, materialization and
sensor tick shows up in the UI afterwards. Steps:

1. golden data: target catalog, simulated drive dataset, slices, calibration shard, replay logs;
2. drop the bundled candidate into the inbox (atomically: copy to a hidden name, then rename);
3. tick the inbox sensor and execute the intake run it requests; tick again to show it is idempotent.
"""

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adas_assets.settings import DEMO_BUNDLES_DIR, AdasHome  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def drop_bundle(src: Path, inbox: Path, name: str) -> Path:
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


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="demo", help="dataset size from config/datagen.yaml (demo, tiny)")
    args = parser.parse_args()

    home = AdasHome.from_env()
    prepare_local_instance(home)
    import dagster as dg

    from adas_assets.definitions import defs
    from sensors.candidate_inbox import candidate_inbox_sensor

    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        banner(f"1/3 golden data ({args.size}) -> {home.artifacts}")
        result = defs.resolve_job_def("golden_data").execute_in_process(
            instance=instance,
            run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": args.size}}}),
        )
        if not result.success:
            print("golden data job failed; see the run in the UI", file=sys.stderr)
            return 1
        for event in result.get_asset_materialization_events():
            print(f"  materialized {event.asset_key.to_user_string()}")

        banner("2/3 drop the bundled candidate into the inbox")
        dropped = drop_bundle(DEMO_BUNDLES_DIR / "candidate", home.inbox, "candidate-demo")
        print(f"  {dropped}")

        banner("3/3 inbox sensor -> candidate intake")
        intake_runs = 0
        for tick in (1, 2):
            with dg.build_sensor_context(
                instance=instance,
                definitions=defs,
                resources=defs.resources,
                sensor_name="candidate_inbox_sensor",
            ) as ctx:
                outcome = candidate_inbox_sensor(ctx)
            if isinstance(outcome, dg.SkipReason):
                print(f"  tick {tick}: skipped: {outcome.skip_message}")
                continue
            for request in outcome.run_requests:
                print(f"  tick {tick}: run requested for bundle {request.run_key[:12]}")
                run = defs.resolve_job_def("candidate_intake").execute_in_process(
                    instance=instance, run_config=request.run_config, tags=request.tags
                )
                intake_runs += 1
                if not run.success:
                    print("candidate intake failed; see the run in the UI", file=sys.stderr)
                    return 1
        event = instance.get_latest_materialization_event(dg.AssetKey("candidate_checkpoint"))
        if event is None or intake_runs == 0:
            print("no candidate was taken in (see the inbox's rejected/ folder)", file=sys.stderr)
            return 1
        meta = event.asset_materialization.metadata

    banner(f"done in {time.perf_counter() - t0:.0f} s")
    print(
        f"  candidate:  {meta['model_name'].value} {meta['version'].value}  bundle {meta['bundle_sha256'].value[:12]}"
    )
    print(
        f"  lineage:    run {meta['training_run_id'].value}, dataset {meta['dataset_tag'].value}, git {meta['git_sha'].value}"
    )
    print(f"  stored at:  {meta['stored_at'].value}")
    print(f"  ADAS_HOME:  {home.root}")
    print("\n  Open the UI on these results:  make ui   (then http://127.0.0.1:3000/asset-groups)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
