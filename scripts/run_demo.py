"""The main job, end to end on embedded defaults (local files, SQLite, CPU targets).

Runs on the same Dagster instance that `make ui` opens, so every run, materialization and
sensor tick shows up in the UI afterwards. Steps:

1. golden data: target catalog, simulated drive dataset, slices, calibration shard, replay logs,
   and the current production model;
2. drop the bundled candidate (or ``--bundle DIR``: any bundle, e.g. demo/bundles/dense-candidate)
   into the inbox (atomically: copy to a hidden name, then rename);
3. tick the inbox sensor and execute the intake run it requests; tick again to show it is idempotent;
4. tick declarative automation (the conditions the automation sensor evaluates) until idle:
   staging, export, engines / Triton repositories / signed packs, evaluation and gates, replay,
   closed-loop simulation and sim verdicts, registry entries, for every supported CPU cell;
5. record approvals and promote through governance and a real local canary (or print why not).
"""

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from adas.catalog import load_catalog  # noqa: E402
from adas.cell import Cell  # noqa: E402
from adas.settings import DEMO_BUNDLES_DIR, AdasHome  # noqa: E402
from adas_assets.definitions import defs  # noqa: E402
from adas_assets.partitions import partition_key  # noqa: E402
from jobs.automation_driver import AutomationDriver, drop_bundle, tick_inbox_sensor  # noqa: E402
from jobs.demo_promotion import promote_demo_candidate  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="demo", help="dataset size from config/datagen.yaml (demo, tiny)")
    parser.add_argument(
        "--bundle",
        type=Path,
        default=DEMO_BUNDLES_DIR / "candidate",
        help="the candidate bundle to take in (default: demo/bundles/candidate; `make demo BUNDLE=DIR`)",
    )
    args = parser.parse_args()
    if not (args.bundle / "contract.yaml").is_file():
        parser.error(f"--bundle {args.bundle}: no contract.yaml there (a bundle is a folder with one)")

    home = AdasHome.from_env()
    prepare_local_instance(home)

    t0 = time.perf_counter()
    with dg.DagsterInstance.get() as instance:
        driver = AutomationDriver(defs, instance)
        driver.prime()
        banner(f"1/5 golden data ({args.size}) -> {home.artifacts}")
        result = defs.resolve_job_def("golden_data").execute_in_process(
            instance=instance,
            run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": args.size}}}),
        )
        if not result.success:
            print("golden data job failed; see the run in the UI", file=sys.stderr)
            return 1
        for event in result.get_asset_materialization_events():
            print(f"  materialized {event.asset_key.to_user_string()}")

        banner(f"2/5 drop the candidate {args.bundle} into the inbox")
        dropped = drop_bundle(args.bundle, home.inbox, f"{args.bundle.resolve().name}-demo")
        print(f"  {dropped}")

        banner("3/5 inbox sensor -> candidate intake")
        intake = tick_inbox_sensor(defs, instance, ticks=2)
        if any(not run.success for run in intake):
            print("candidate intake failed; see the run in the UI", file=sys.stderr)
            return 1
        event = instance.get_latest_materialization_event(dg.AssetKey("candidate_checkpoint"))
        if event is None:
            print("no candidate was taken in (see the inbox's rejected/ folder)", file=sys.stderr)
            return 1
        if not intake:
            print(
                "  the bundled candidate was already taken in on this ADAS_HOME (`make clean-state` starts over)"
            )
        meta = event.asset_materialization.metadata

        banner("4/5 declarative automation until idle")
        runs = driver.run_until_idle()
        failed_runs = [r for r in runs if not r.success]

        banner("5/5 registry: approvals, governance, local canary (two Triton servers behind nginx)")

        promotion_lines, _ = promote_demo_candidate(defs, instance)  # promoted or refused: both are reported
        report = summarize(instance, defs, runs) + "\n\n" + "\n".join(promotion_lines)

    banner(f"done in {time.perf_counter() - t0:.0f} s")
    print(report)
    print(
        f"  candidate:  {meta['model_name'].value} {meta['version'].value}  bundle {meta['bundle_sha256'].value[:12]}"
    )
    print(
        f"  lineage:    run {meta['training_run_id'].value}, dataset {meta['dataset_tag'].value}, git {meta['git_sha'].value}"
    )
    print(f"  stored at:  {meta['stored_at'].value}")
    print(f"  ADAS_HOME:  {home.root}")
    print("\n  Open the UI on these results:  make ui   (then http://127.0.0.1:3000/asset-groups)")
    if failed_runs:
        print(
            f"\n  {len(failed_runs)} automation run(s) failed; open them in the UI (Runs tab)",
            file=sys.stderr,
        )
        return 1
    return 0


def summarize(
    instance: dg.DagsterInstance, defs: dg.Definitions, runs: list[dg.ExecuteInProcessResult]
) -> str:
    """Latest state of every per-target asset on the CPU cells, and every check the runs evaluated."""

    graph = defs.resolve_asset_graph()
    partitioned = sorted(
        (k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None),
        key=lambda k: k.to_user_string(),
    )
    cells = [partition_key(Cell(d, p)) for d, p in load_catalog().supported_pairs() if d == "x86-cpu"]
    lines = ["", "  per-target assets (supported CPU cells):"]
    for key in partitioned:
        states = []
        for cell in cells:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[cell]), limit=1
            ).records
            states.append(f"{cell}: {'materialized' if records else 'missing'}")
        lines.append(f"    {key.to_user_string():28s} " + "   ".join(states))
    lines += gate_lines(instance, cells)
    checks = [
        (r.dagster_run.tags.get("dagster/partition", ""), c)
        for r in runs
        for c in r.get_asset_check_evaluations()
    ]
    if checks:
        lines.append("")
        lines.append("  asset checks:")
        for partition, c in checks:
            verdict = "PASS" if c.passed else f"FAIL ({c.severity.value})"
            lines.append(
                f"    {c.asset_key.to_user_string():28s} {partition:16s} {c.check_name:26s} {verdict}"
            )
    return "\n".join(lines)


def gate_lines(instance: dg.DagsterInstance, cells: list[str]) -> list[str]:
    """Every gate's three-valued verdict per cell, and each check with its interval."""
    lines = ["", "  gates (candidate - production: point [low, high] (n); green / amber / red):"]
    for cell in cells:
        for asset, rows_key, name_key, interval_key in (
            ("regression_gate", "gates", "gate", "interval_pts"),
            ("sim_verdict", "checks", "check", "interval"),
        ):
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[cell]), limit=1
            ).records
            if not records:
                lines.append(f"    {cell:16s} {asset:16s} not materialized")
                continue
            meta = records[0].asset_materialization.metadata  # type: ignore[union-attr]
            runs = f"  ({meta['runs'].value})" if "runs" in meta else ""
            lines.append(f"    {cell:16s} {asset:16s} {str(meta['verdict'].value).upper()}{runs}")
            table = meta.get(rows_key)
            for row in table.records if isinstance(table, dg.TableMetadataValue) else []:
                data = row.data
                scope = f" {data['scope']}" if data.get("scope") and data["scope"] != "all" else ""
                if data["status"] == "skipped":
                    continue
                lines.append(
                    f"      {str(data[name_key]) + scope:34s} {data['status']:7s} {data.get(interval_key) or ''}"
                )
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
