"""Benchmark ONNX Runtime session settings quiet and under a standard background load (#16 item 2).

    .venv/bin/python scripts/benchmark_contention.py [--rounds 5] [--runs 150] [--write]

The standard background load is one CPU burner (``while True: pass``) pinned to core 0 with
``sched_setaffinity``: one core of the node taken by something else, what a busy CI node or a
shared inference node looks like. Every setting is measured quiet and loaded in the same run,
in alternating rounds (quiet, loaded, quiet, ...), batch 1, each round ``--runs`` timed calls after
a warm-up; the figures are medians over rounds of each round's p50 / p95, and the ratio is
loaded / quiet. Engines: the demo candidate's FP32 export and its INT8 Q/DQ engine, as
packaging builds them.

Settings compared: 1 intra-op thread; 2 threads without spinning (the platform's choice since
spinning stole the cores from other work); 2 threads with spinning (ORT's default); 2 threads
without spinning and ``session.dynamic_block_base`` 1 or 4 (ORT hands out work in shrinking
blocks, so a thread slowed by another process's load holds up less of each operator).
``--write`` appends the table to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from adas.packaging.ort_session import session_options  # noqa: E402
from adas.settings import DEMO_BUNDLES_DIR  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_burner, cpu_section_head  # noqa: E402
from scripts.benchmark_simulation import export_engine, int8_engine  # noqa: E402

# (label, intra-op threads, spinning, dynamic_block_base or 0 for ORT's default)
SETTINGS: tuple[tuple[str, int, bool, int], ...] = (
    ("1 thread", 1, False, 0),
    ("2 threads, no spinning", 2, False, 0),
    ("2 threads, spinning", 2, True, 0),
    ("2 threads, no spinning, dynamic_block_base 4", 2, False, 4),
    ("2 threads, no spinning, dynamic_block_base 1", 2, False, 1),
)


def _session(model: Path, threads: int, spinning: bool, block_base: int) -> ort.InferenceSession:
    so = session_options(threads, dynamic_block_base=block_base)
    if spinning:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")
    return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])


def _round(session: ort.InferenceSession, x: np.ndarray, runs: int) -> tuple[float, float]:
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: x})
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        session.run(None, {name: x})
        ms.append((time.perf_counter_ns() - t0) / 1e6)
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def measure(model: Path, rounds: int, runs: int) -> dict[str, dict[str, list[tuple[float, float]]]]:
    x = np.random.default_rng(0).standard_normal((1, 3, 96, 384), dtype=np.float32)
    sessions = {label: _session(model, t, s, b) for label, t, s, b in SETTINGS}
    out: dict[str, dict[str, list[tuple[float, float]]]] = {
        label: {"quiet": [], "loaded": []} for label in sessions
    }
    for _ in range(rounds):
        for state in ("quiet", "loaded"):
            with cpu_burner(active=state == "loaded"):
                for label, session in sessions.items():
                    out[label][state].append(_round(session, x, runs))
    return out


def _median(rounds: list[tuple[float, float]], i: int) -> float:
    return float(np.median([r[i] for r in rounds]))


def table(results: dict[str, Any]) -> list[str]:
    rows = [
        "| engine | setting | quiet p50 ms | quiet p95 ms | loaded p50 ms | loaded p95 ms | loaded / quiet p50 |",
        "|---|---|---|---|---|---|---|",
    ]
    for engine, per in results.items():
        for label, states in per.items():
            q50, q95 = _median(states["quiet"], 0), _median(states["quiet"], 1)
            l50, l95 = _median(states["loaded"], 0), _median(states["loaded"], 1)
            rows.append(
                f"| {engine} | {label} | {q50:.2f} | {q95:.2f} | {l50:.2f} | {l95:.2f} | {l50 / q50:.2f} |"
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=150)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        print("needs at least 2 cores (the burner takes core 0)")
        return 1
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        fp32, contract, _ = export_engine(DEMO_BUNDLES_DIR / "candidate", Path(tmp) / "model.onnx")
        int8 = int8_engine(fp32, contract, Path(tmp) / "int8")
        results = {
            "FP32": measure(fp32, args.rounds, args.runs),
            "INT8": measure(int8, args.rounds, args.runs),
        }
    load_after = os.getloadavg()
    rows = table(results)
    print("\n".join(rows))
    if args.write:
        lines = [
            *cpu_section_head(
                "Latency under contention (CPU): ONNX Runtime session settings",
                f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (burner included)",
            ),
            f"- `scripts/benchmark_contention.py --rounds {args.rounds} --runs {args.runs}`: batch 1, "
            f"{contract.model_name} {contract.version} (96x384); loaded = one CPU burner pinned to core 0; "
            "medians over alternating quiet / loaded rounds of each round's p50 / p95",
            "",
            *rows,
        ]
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
