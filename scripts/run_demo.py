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

The console shows one line per step (and per cell), with elapsed times and a progress display
while a long step runs, then the summary table; Dagster's event stream and everything else the
steps print go to ``$ADAS_HOME/logs/demo-<time>.log``, whose path is printed. ``--verbose``
keeps the full stream on the console.
"""

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")
if "--verbose" not in sys.argv:  # Dagster's beta/preview notices at import would open the quiet output
    warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview)")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import dagster as dg  # noqa: E402

from adas.catalog import load_catalog  # noqa: E402
from adas.cell import Cell  # noqa: E402
from adas.settings import DEMO_BUNDLES_DIR, AdasHome  # noqa: E402
from adas_assets.definitions import defs  # noqa: E402
from adas_assets.partitions import partition_key  # noqa: E402
from jobs.automation_driver import AutomationDriver, drop_bundle, tick_inbox_sensor  # noqa: E402
from jobs.demo_console import DemoConsole, DemoStep, StepProgress, quiet_log_path  # noqa: E402
from jobs.demo_promotion import promote_demo_candidate  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402


@dataclass
class DemoRun:
    """What the steps hand each other."""

    instance: dg.DagsterInstance
    home: AdasHome
    size: str
    bundle: Path
    driver: AutomationDriver
    runs: list[dg.ExecuteInProcessResult] = field(default_factory=list)
    candidate: dict[str, str] = field(default_factory=dict)
    promotion: list[str] = field(default_factory=list)


def run_failure(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step's error, for the console."""
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error  # type: ignore[union-attr]
            while error is not None and error.cause is not None:  # the user code's own exception
                error = error.cause
            return f"step {event.step_key}: {error.message.strip() if error else 'failed'}"
    return f"run {result.run_id[:8]} failed"


def golden_data(demo: DemoRun, progress: StepProgress) -> str:
    progress.update(f"generating the {demo.size} dataset, slices, calibration shard, replay logs")
    result = defs.resolve_job_def("golden_data").execute_in_process(
        instance=demo.instance,
        run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": demo.size}}}),
        raise_on_error=False,
    )
    if not result.success:
        raise RuntimeError(f"golden data job failed: {run_failure(result)}")
    return f"{len(result.get_asset_materialization_events())} assets in {demo.home.artifacts}"


def drop_candidate(demo: DemoRun, progress: StepProgress) -> str:
    return str(drop_bundle(demo.bundle, demo.home.inbox, f"{demo.bundle.resolve().name}-demo"))


def intake(demo: DemoRun, progress: StepProgress) -> str:
    runs = tick_inbox_sensor(defs, demo.instance, ticks=2)
    failed = [r for r in runs if not r.success]
    if failed:
        raise RuntimeError(f"candidate intake failed: {run_failure(failed[0])}")
    event = demo.instance.get_latest_materialization_event(dg.AssetKey("candidate_checkpoint"))
    if event is None:
        raise RuntimeError(f"no candidate was taken in (see {demo.home.rejected})")
    meta = event.asset_materialization.metadata  # type: ignore[union-attr]
    keys = (
        "model_name",
        "version",
        "bundle_sha256",
        "training_run_id",
        "dataset_tag",
        "git_sha",
        "stored_at",
    )
    demo.candidate = {k: str(meta[k].value) for k in keys}
    taken = f"{demo.candidate['model_name']} {demo.candidate['version']}"
    return taken if runs else f"{taken} (already taken in on this ADAS_HOME; `make clean-state` starts over)"


def automation(demo: DemoRun, progress: StepProgress) -> str:
    """Every run automation requests, until idle; one line per cell."""
    demo.driver.log = lambda text: progress.update(f"{len(demo.runs)} runs done; {text.strip()}")
    demo.runs = demo.driver.run_until_idle()
    by_cell: dict[str, list[dg.ExecuteInProcessResult]] = {}
    for run in demo.runs:
        by_cell.setdefault(run.dagster_run.tags.get("dagster/partition", "(unpartitioned)"), []).append(run)
    for cell, runs in sorted(by_cell.items()):
        stats = [demo.instance.get_run_stats(r.run_id) for r in runs]
        seconds = sum((s.end_time or 0) - (s.start_time or 0) for s in stats)
        failed = [r for r in runs if not r.success]
        state = "ok" if not failed else f"{len(failed)} failed: {run_failure(failed[0])}"
        progress.line(f"{cell:18s} {len(runs):2d} runs  {seconds:6.1f} s  {state}")
        for run in failed:
            progress.problem(
                f"automation run {run.run_id[:8]} [{cell}]: {run_failure(run)} (Runs tab in the UI)"
            )
    return f"{len(demo.runs)} runs until idle"


def registry(demo: DemoRun, progress: StepProgress) -> str:
    progress.update("approvals, governance, local canary (two Triton servers behind nginx)")
    demo.promotion, _ = promote_demo_candidate(defs, demo.instance)  # promoted or refused: both are reported
    return "approvals, governance, local canary"


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
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Dagster's full event stream on the console, not in the log file",
    )
    args = parser.parse_args()
    if not (args.bundle / "contract.yaml").is_file():
        parser.error(f"--bundle {args.bundle}: no contract.yaml there (a bundle is a folder with one)")

    home = AdasHome.from_env()
    prepare_local_instance(home)
    # The console keeps the terminal: fds 1 and 2 go to the log file while steps run.
    console = DemoConsole(os.fdopen(os.dup(1), "w"), quiet_log_path(home.logs), verbose=args.verbose)
    with dg.DagsterInstance.get() as instance:
        driver = AutomationDriver(defs, instance)
        driver.prime()
        demo = DemoRun(instance, home, args.size, args.bundle, driver)
        steps = [
            DemoStep(f"golden data ({args.size})", lambda p: golden_data(demo, p), long=True),
            DemoStep(f"drop the candidate {args.bundle} into the inbox", lambda p: drop_candidate(demo, p)),
            DemoStep("inbox sensor -> candidate intake", lambda p: intake(demo, p)),
            DemoStep(
                "declarative automation until idle (engines, equivalence, evaluation, simulation, registry)",
                lambda p: automation(demo, p),
                long=True,
            ),
            DemoStep("registry: approvals, governance, local canary", lambda p: registry(demo, p), long=True),
        ]
        return console.run(steps, lambda: summary_table(demo))


def summary_table(demo: DemoRun) -> str:
    """One row per supported CPU cell, the promotion, and where everything is. Every per-target
    asset and every check are printed first: into the log file, or on the console with --verbose."""
    cells = [partition_key(Cell(d, p)) for d, p in load_catalog().supported_pairs() if d == "x86-cpu"]
    full = summarize(demo.instance, defs, demo.runs)
    print(full)  # into the log file (the console, with --verbose)
    checks: dict[str, dict[str, bool]] = {}
    for run in demo.runs:
        cell = run.dagster_run.tags.get("dagster/partition", "")
        for c in run.get_asset_check_evaluations():
            checks.setdefault(cell, {})[c.check_name] = c.passed
    head = f"  {'cell':16s} {'engine':9s} {'equivalence':12s} {'latency':8s} {'eval gate':10s} {'sim verdict':12s} checks"
    rows = ["summary (supported CPU cells):", head, "  " + "-" * (len(head) - 2)]
    for cell in cells:
        cell_checks = checks.get(cell, {})

        def check(name: str, cell_checks: dict[str, bool] = cell_checks) -> str:
            return {True: "pass", False: "FAIL", None: "-"}[cell_checks.get(name)]

        rows.append(
            f"  {cell:16s} {_materialized(demo.instance, 'engine', cell):9s} {check('numerical_equivalence'):12s} "
            f"{check('latency_within_budget'):8s} {_verdict(demo.instance, 'regression_gate', cell):10s} "
            f"{_verdict(demo.instance, 'sim_verdict', cell):12s} "
            f"{sum(cell_checks.values())}/{len(cell_checks)} passed"
        )
    c = demo.candidate
    rows += ["", "registry:", *[f"  {line}" for line in demo.promotion], ""]
    if c:
        rows.append(f"candidate:  {c['model_name']} {c['version']}  bundle {c['bundle_sha256'][:12]}")
        rows.append(f"lineage:    run {c['training_run_id']}, dataset {c['dataset_tag']}, git {c['git_sha']}")
        rows.append(f"stored at:  {c['stored_at']}")
    rows.append(f"ADAS_HOME:  {demo.home.root}")
    rows.append("Open the UI on these results:  make ui   (then http://127.0.0.1:3000/asset-groups)")
    return "\n".join(rows)


def _materialized(instance: dg.DagsterInstance, asset: str, cell: str) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[cell]), limit=1
    ).records
    return "built" if records else "missing"


def _verdict(instance: dg.DagsterInstance, asset: str, cell: str) -> str:
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[cell]), limit=1
    ).records
    if not records:
        return "-"
    meta = records[0].asset_materialization.metadata  # type: ignore[union-attr]
    return str(meta["verdict"].value).upper() if "verdict" in meta else "done"


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
