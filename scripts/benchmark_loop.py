"""Benchmark the no-click loop through the real ``dagster-daemon`` (#16 item 4): from a bundle
dropped in the inbox to both CPU cells' registry entries, with a waterfall per asset.

    .venv/bin/python scripts/benchmark_loop.py [--bundle demo/bundles/candidate] [--size tiny|demo] [--write]

A fresh instance in a temporary folder (SQLite, the local dagster.yaml: queued runs, at most 2 at a
time). ``--size tiny`` (default): the tiny golden data, the quick sweep and the fast packaging
config, the world of ``tests/operations/test_daemon_loop.py``; ``--size demo``: what ``make demo``
runs (the demo dataset, the shipped packaging config and sweep), the world the 5-minute target is
set for. Prints every step after the drop (start offset, duration,
run), then the wall time, the sum of step durations, the time at least one step was executing,
and the orchestration overhead: wall time during which no step executed (sensor and automation
ticks, run queueing and launch, step process start-up, code location loads), as seconds and as a
share of the wall time. ``--write`` appends the waterfall to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from adas.settings import DEMO_BUNDLES_DIR  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head  # noqa: E402
from tests.operations.daemon_loop import LoopResult, daemon_loop  # noqa: E402


def waterfall(loop: LoopResult) -> list[str]:
    rows = [
        "| start s | duration s | step | partition | run |",
        "|---|---|---|---|---|",
    ]
    for s in loop.steps:
        if s.end < loop.dropped_at:
            continue  # before the drop: the golden data and the production baseline
        rows.append(
            f"| {s.start - loop.dropped_at:7.1f} | {s.end - s.start:6.1f} | {s.asset} | {s.partition or '-'} | {s.run_id[:8]} |"
        )
    return rows


def summary(loop: LoopResult) -> list[str]:
    after = [s for s in loop.steps if s.end >= loop.dropped_at]
    total = sum(s.end - max(s.start, loop.dropped_at) for s in after)
    busy = loop.busy_s()
    idle = loop.wall_s - busy
    return [
        f"- drop -> both registry entries: {loop.wall_s:.0f} s wall ({loop.wall_s / 60:.1f} min; target <= 5 min)",
        f"- {len(after)} steps after the drop, {total:.0f} s of step durations (two runs at a time overlap)",
        f"- at least one step executing: {busy:.0f} s; nothing executing: {idle:.0f} s = orchestration overhead "
        f"{idle / loop.wall_s:.1%} of the wall time (target <= 5%)",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=DEMO_BUNDLES_DIR / "candidate")
    ap.add_argument("--size", choices=["tiny", "demo"], default="tiny")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    with (
        tempfile.TemporaryDirectory(prefix="loop-") as tmp,
        daemon_loop(Path(tmp), args.bundle, "candidate", size=args.size) as loop,
    ):
        rows, lines = waterfall(loop), summary(loop)
    load_after = os.getloadavg()
    print("\n".join([*rows, "", *lines]))
    if args.write:
        text = [
            *cpu_section_head(
                "No-click loop through dagster-daemon: drop -> registry entries (CPU cells)",
                f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after",
            ),
            f"- `scripts/benchmark_loop.py --size {args.size}`: {args.bundle.name} bundle, "
            + (
                "tiny golden data, quick sweep, fast packaging config"
                if args.size == "tiny"
                else "demo golden data, shipped sweep and packaging config (what `make demo` runs)"
            )
            + ", local dagster.yaml (queued runs, at most 2 concurrent, steps in the run's process)",
            *lines,
            "",
            *rows,
        ]
        append_to_benchmarks("\n".join(text) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
