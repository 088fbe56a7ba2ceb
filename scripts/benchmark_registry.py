"""Registry under concurrent load on PostgreSQL (and, with --canary, the local canary).

8 writer processes (own connections) append 1,000 events each; every 10th request is sent
twice with the same idempotency key (a client retry), and every 25th event also moves the
shared target's alias with optimistic concurrency (re-read and retry on conflict). Checked
afterwards: exactly writers x events events, no duplicate, no lost one, the target version
equal to the number of successful moves, and the registry's own consistency audit empty.

--canary additionally runs the real local canary (two Triton servers behind nginx) twice:
an agreeing candidate through 1% -> 5% -> 25% -> 100% (throughput, requests dropped), and a
candidate 120 ms slower per request (time from the first breach to full rollback).

Usage:
  python scripts/benchmark_registry.py [--url postgresql+psycopg2://...] [--writers 8]
      [--events 1000] [--canary] [--write]
``--write`` appends a "Registry (PostgreSQL)" section to BENCHMARKS.md (never rewrites it).
Without --url a temporary database is created on 127.0.0.1:5432 and dropped afterwards.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adas.packaging.triton_repository import write_triton_repository  # noqa: E402
from adas.registry.config import load_policy  # noqa: E402
from adas.registry.rollout.controller import LocalRollout  # noqa: E402
from adas.registry.rollout.plan import make_plan  # noqa: E402
from adas.registry.store import PromotionConflict, RegistryStore  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, utc_now  # noqa: E402
from tests.registry.factories import make_body  # noqa: E402
from tests.registry.packs import CPU, contract, export_untrained, frames  # noqa: E402

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
TARGET = "bench-device/fp32"


def _writer(url: str, writer: int, events: int, entry_id: int, out: mp.Queue) -> None:
    store = RegistryStore(url, create=False)
    latencies, moves, conflicts, replays = [], 0, 0, 0
    for i in range(events):
        key = f"bench:{writer}:{i}"
        t0 = time.perf_counter()
        first = store.record_event(
            "benchmark", actor=f"writer-{writer}", reason="load", idempotency_key=key, payload={"i": i}
        )
        latencies.append(time.perf_counter() - t0)
        if i % 10 == 0:  # a client retry of the same request
            again = store.record_event(
                "benchmark", actor=f"writer-{writer}", reason="load", idempotency_key=key, payload={"i": i}
            )
            replays += again.id == first.id
        if i % 25 == 0:
            for attempt in range(50):
                version = store.target_state(TARGET).version
                try:
                    store.change_target(
                        TARGET,
                        kind="benchmark_move",
                        actor=f"writer-{writer}",
                        reason="load",
                        idempotency_key=f"bench-move:{writer}:{i}",
                        moves={"production": entry_id},
                        expected_version=version,
                    )
                    moves += 1
                    break
                except PromotionConflict:
                    conflicts += 1
                    time.sleep(0.001 * (attempt + 1))
    store.dispose()
    out.put(
        {"writer": writer, "latencies": latencies, "moves": moves, "conflicts": conflicts, "replays": replays}
    )


def registry_benchmark(url: str, writers: int, events: int) -> dict:
    store = RegistryStore(url)
    entry, _ = store.register(make_body("1.0.0", "bench-device", "fp32"), "# bench", actor="bench")
    ctx = mp.get_context("fork")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(url, w, events, entry.id, out)) for w in range(writers)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    bench = store.events(kinds=["benchmark"])
    keys = [e.idempotency_key for e in bench]
    expected = {f"bench:{w}:{i}" for w in range(writers) for i in range(events)}
    moves = sum(r["moves"] for r in results)
    lat = sorted(x for r in results for x in r["latencies"])
    summary = {
        "writers": writers,
        "events_per_writer": events,
        "events_recorded": len(bench),
        "duplicates": len(keys) - len(set(keys)),
        "lost": len(expected - set(keys)),
        "retries_deduplicated": sum(r["replays"] for r in results),
        "retries_sent": writers * len(range(0, events, 10)),
        "alias_moves": moves,
        "alias_conflicts_retried": sum(r["conflicts"] for r in results),
        "target_version": store.target_state(TARGET).version,
        "consistency_problems": store.consistency_problems(),
        "wall_s": wall,
        "events_per_s": len(bench) / wall,
        "p50_ms": 1000 * lat[len(lat) // 2],
        "p95_ms": 1000 * lat[int(len(lat) * 0.95)],
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
    }
    summary["ok"] = (
        summary["events_recorded"] == writers * events
        and summary["duplicates"] == 0
        and summary["lost"] == 0
        and summary["retries_deduplicated"] == summary["retries_sent"]
        and summary["target_version"] == moves
        and not summary["consistency_problems"]
    )
    store.dispose()
    return summary


def canary_benchmark() -> dict:
    root = Path(tempfile.mkdtemp(prefix="canary-bench-"))
    onnx = export_untrained(root / "m.onnx", seed=0)
    prod = write_triton_repository(root / "prod", contract("1.2.0"), onnx, **CPU).root
    good = write_triton_repository(root / "good", contract("1.3.0"), onnx, **CPU).root
    slow = root / "slow"
    shutil.copytree(good, slow)
    model_py = next(slow.glob("*_postprocess/1/model.py"))
    model_py.write_text(
        re.sub(
            r"(    def execute\(self, requests: list\[Any\]\) -> list\[Any\]:\n)",
            r"\1        import time\n\n        time.sleep(0.12)\n",
            model_py.read_text(),
            count=1,
        )
    )
    policy = load_policy()
    plan = make_plan(
        policy.rollout,
        target="x86-cpu/fp32",
        model_name="test-detector",
        candidate_version="1.3.0",
        production_version="1.2.0",
    )
    out = {}
    for name, candidate in (("agreeing", good), ("slow", slow)):
        report = LocalRollout(
            plan,
            production_repository=prod,
            candidate_repository=candidate,
            frames=frames(32),
            concurrency=policy.rollout.local.concurrency,
            workdir=root / f"work-{name}",
        ).run()
        out[name] = report
        print(report.to_markdown(), flush=True)
    shutil.rmtree(root, ignore_errors=True)
    return out


def _markdown(reg: dict, canary: dict | None, url: str) -> str:
    now = utc_now()
    lines = [
        "",
        "## Registry (PostgreSQL)",
        "",
        f"`python scripts/benchmark_registry.py{' --canary' if canary else ''} --write` on {now}, "
        f"{platform.node()} ({os.cpu_count()} cores), {url.split('@')[-1]}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| writers x events | {reg['writers']} x {reg['events_per_writer']} (own processes and connections) |",
        f"| events recorded | {reg['events_recorded']} (lost {reg['lost']}, duplicated {reg['duplicates']}) |",
        f"| retries with the same idempotency key | {reg['retries_sent']} sent, {reg['retries_deduplicated']} deduplicated |",
        f"| optimistic alias moves on one target | {reg['alias_moves']} committed, {reg['alias_conflicts_retried']} conflicts retried, target version {reg['target_version']} |",
        f"| consistency audit | {'clean' if not reg['consistency_problems'] else reg['consistency_problems']} |",
        f"| throughput | {reg['events_per_s']:.0f} events/s ({reg['wall_s']:.1f} s wall) |",
        f"| append latency p50 / p95 / p99 | {reg['p50_ms']:.2f} / {reg['p95_ms']:.2f} / {reg['p99_ms']:.2f} ms |",
        f"| verdict | {'PASS' if reg['ok'] else 'FAIL'} |",
    ]
    if canary:
        good, slow = canary["agreeing"], canary["slow"]
        b = slow.breach
        lines += [
            "",
            "Local canary (two Triton 2.51 servers, python backend + ONNX Runtime, behind Debian nginx; "
            "replayed frames, 4 clients, one connection per request):",
            "",
            "| run | outcome | requests | throughput | dropped | breach to full rollback |",
            "|---|---|---|---|---|---|",
            f"| agreeing candidate, 1% -> 5% -> 25% -> 100% | {good.outcome} | {good.requests['sent']} | "
            f"{good.throughput_rps:.1f} req/s | {good.dropped_requests} | - |",
            f"| candidate +120 ms per request | {slow.outcome} | {slow.requests['sent']} | {slow.throughput_rps:.1f} req/s | "
            f"{slow.dropped_requests} | "
            + (
                f"{b.breach_to_rollback_s:.2f} s (3 x 1 s breached intervals; decision to drained "
                f"{b.decision_to_rollback_s:.2f} s) |"
                if b
                else "- |"
            ),
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="PostgreSQL URL (default: a temporary database on 127.0.0.1:5432)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--canary", action="store_true", help="also run the local canary benchmark")
    parser.add_argument("--write", action="store_true", help="append the results to BENCHMARKS.md")
    args = parser.parse_args()
    url, temp = args.url, None
    if url is None:
        temp = f"registry_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{temp}"'))
        url = ADMIN_URL.rsplit("/", 1)[0] + f"/{temp}"
    try:
        reg = registry_benchmark(url, args.writers, args.events)
    finally:
        if temp:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{temp}" WITH (FORCE)'))
    for k, v in reg.items():
        print(f"{k:>28}: {v:.3f}" if isinstance(v, float) else f"{k:>28}: {v}")
    canary = canary_benchmark() if args.canary else None
    text = _markdown(reg, canary, url)
    print(text)
    if args.write:
        append_to_benchmarks(text)
    return 0 if reg["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
