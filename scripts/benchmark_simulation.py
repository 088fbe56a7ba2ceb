"""Benchmark closed-loop simulation throughput with the ONNX Runtime engine in the loop.

    python scripts/benchmark_simulation.py [--bundle demo/bundles/candidate] [--episodes 12]
        [--precision fp32|int8|both] [--processes 1,2] [--profile-episodes 4] [--write]

First a profile: ``--profile-episodes`` episodes in this process, the CPU milliseconds per step of
each stage of the step loop (``EpisodeOutput.stage_cpu_s``: render, weather, engine, tracker,
controller, measure, world step, player, and the episode's setup). Then throughput: the same
30-second closed-loop episodes (the ``benchmark`` sweep of config/simulation.yaml: every category
is an OpenSCENARIO file played by the player, weather included) through ``run_sweep`` with 1 and
with 2 local processes, one episode per shard, ONNX Runtime single-threaded per process (so the
processes are the parallelism). Every step renders, applies the weather transform, runs the engine
and decodes: exactly the asset's work. Reports 30-s episodes per minute (simulated seconds / 30,
so runs that end early at a collision count for what they simulated), per core, and the scaling
from 1 to 2 processes. The target is >= 100 episodes/min on 2 cores (issue #15). The load average is
printed with every figure: the machine is shared.

Without ``--bundle`` it uses ``demo/bundles/candidate`` when present, else an untrained detector of
the same architecture (identical inference cost; it detects nothing, so its ego collides and
episodes end early; the per-simulated-second figures stay meaningful). ``--write`` appends a
"Simulation (CPU)" section to BENCHMARKS.md (append only: other benchmarks share the file).
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
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from adas.datasets.config import load_datagen_config  # noqa: E402
from adas.detector.bundle import build_contract, load_bundle_model, read_contract  # noqa: E402
from adas.detector.model import build_model  # noqa: E402
from adas.intake.contract import Contract, Normalization  # noqa: E402
from adas.packaging.config import default_packaging_config  # noqa: E402
from adas.packaging.export import export_onnx  # noqa: E402
from adas.packaging.ort_engines import OrtEngine  # noqa: E402
from adas.packaging.ort_int8 import build_int8_engine  # noqa: E402
from adas.settings import DEMO_BUNDLES_DIR  # noqa: E402
from adas.simulation.closed_loop import run_episode  # noqa: E402
from adas.simulation.config import load_simulation_config  # noqa: E402
from adas.simulation.perception import PerceptionSpec, build_perception  # noqa: E402
from adas.simulation.planning import plan_runs  # noqa: E402
from adas.simulation.shards import EpisodeSettings  # noqa: E402
from adas.simulation.sweep import run_sweep  # noqa: E402
from adas.storage import LocalArtifactStore  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head  # noqa: E402


def export_engine(bundle: Path | None, out: Path) -> tuple[Path, Contract, bool]:
    if bundle is not None and (bundle / "contract.yaml").is_file():
        contract = read_contract(bundle)
        export_onnx(load_bundle_model(bundle), contract, out)
        return out, contract, True
    torch.manual_seed(0)
    contract = build_contract(
        version="0.0.0",
        model_name="untrained",
        task="detection-2d",
        normalization=Normalization(scale=1 / 255, mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25)),
    )
    export_onnx(build_model().eval(), contract, out)
    return out, contract, False


def int8_engine(fp32: Path, contract: Contract, out_dir: Path) -> Path:
    """The INT8 Q/DQ engine as packaging builds it, calibrated on demo frames when present."""
    pngs = sorted((REPO_ROOT / ".adas" / "datasets" / "demo" / "images" / "golden_val").glob("*.png"))[:64]
    if pngs:
        frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    else:
        _, _, h, w = contract.input.shape
        frames = np.random.default_rng(0).integers(0, 256, size=(32, h, w, 3), dtype=np.uint8)
    return build_int8_engine(fp32, frames, contract, out_dir, default_packaging_config().int8).path


def _measure(engine: Path, contract: Contract, runs: list, processes: int, label: str) -> dict[str, Any]:
    cfg = load_simulation_config()
    settings = EpisodeSettings.from_configs(cfg, load_datagen_config())
    spec = PerceptionSpec(label=label, kind="engine", contract=contract)
    with tempfile.TemporaryDirectory(prefix="simbench-") as tmp:
        store = LocalArtifactStore(root=tmp)
        t0 = time.perf_counter()
        res = run_sweep(
            store, runs, spec, settings, engine_path=engine, shards=len(runs), processes=processes
        )
        wall = time.perf_counter() - t0
    sim_s = sum(r.metrics.duration_s for r in res.records)
    full = sum(
        1 for r in res.records if r.metrics.steps >= round(r.spec.duration_s * cfg.policy_frequency_hz)
    )
    per_episode = [r.wall_s / max(r.metrics.duration_s, 1e-9) * 30.0 for r in res.records]
    cpu_per_episode = [r.cpu_s / max(r.metrics.duration_s, 1e-9) * 30.0 for r in res.records]
    eq = sim_s / 30.0
    return {
        "processes": processes,
        "episodes": len(runs),
        "full_length": full,
        "collisions": sum(r.metrics.collisions for r in res.records),
        "sim_s": sim_s,
        "wall_s": wall,
        "episodes_per_min": eq / wall * 60.0,
        "episodes_per_min_per_core": eq / wall * 60.0 / processes,
        "s_per_episode_median": float(np.median(per_episode)),
        # CPU seconds the simulating process spent per 30-s episode: what a core does when not shared.
        "cpu_s_per_episode_median": float(np.median(cpu_per_episode)),
        "cpu_capacity_per_core": 60.0 / float(np.median(cpu_per_episode)),
    }


TARGET_EPISODES_PER_MIN = 100.0


def engine_ceiling(engine: Path, contract: Contract, cores: int = 2, rounds: int = 60) -> dict[str, float]:
    """The engine alone: CPU ms per frame (batch 1, one thread, as every simulating process runs
    it) and the episodes/min ``cores`` unshared cores would reach if nothing but the engine ran
    (150 frames per 30-s episode at 5 Hz). No closed loop can beat this figure on this machine."""
    ort_engine = OrtEngine(engine, intra_op_threads=1, contract=contract)
    _, c, h, w = contract.input.shape  # batch 1 (the batch axis may be dynamic)
    x = np.random.default_rng(0).random((1, c, h, w), dtype=np.float32)
    for _ in range(5):
        ort_engine.run(x)
    t = time.process_time()
    for _ in range(rounds):
        ort_engine.run(x)
    ms = (time.process_time() - t) / rounds * 1000.0
    frames_per_episode = 30 * load_simulation_config().policy_frequency_hz
    return {"engine_ms": ms, "ceiling": cores * 60.0 / (ms / 1000.0 * frames_per_episode)}


STAGES = ("render", "weather", "engine", "tracker", "controller", "measure", "world_step", "player", "setup")


def _profile(engine: Path, contract: Contract, runs: list) -> dict[str, Any]:
    """CPU ms per step of each stage over ``runs``, in this process (the first episode pays the
    simulator's start-up in ``setup``)."""
    cfg = load_simulation_config()
    datagen = load_datagen_config()
    perception = build_perception(PerceptionSpec(label="profile", kind="engine", contract=contract), engine)
    totals: dict[str, float] = {}
    steps, cpu = 0, 0.0
    for run in runs:
        out = run_episode(run, perception, datagen, cfg.controller)
        for stage, s in out.stage_cpu_s.items():
            totals[stage] = totals.get(stage, 0.0) + s
        steps += len(out.trace.t)
        cpu += out.cpu_s
    return {
        "episodes": len(runs),
        "steps": steps,
        "ms_per_step": {k: totals.get(k, 0.0) / max(steps, 1) * 1000.0 for k in STAGES},
        "cpu_ms_per_step": cpu / max(steps, 1) * 1000.0,
        "load": os.getloadavg(),
    }


def _profile_table(p: dict[str, Any]) -> str:
    head = "| " + " | ".join(STAGES) + " | total CPU ms / step | load avg (1 min) |"
    cells = [f"{p['ms_per_step'][k]:.2f}" for k in STAGES]
    return "\n".join(
        [
            head,
            "|" + "---|" * (len(STAGES) + 2),
            "| " + " | ".join(cells) + f" | {p['cpu_ms_per_step']:.2f} | {p['load'][0]:.1f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--bundle", type=Path, default=None, help="candidate bundle (default demo/bundles/candidate)"
    )
    ap.add_argument("--episodes", type=int, default=12, help="30-s episodes per measurement")
    ap.add_argument("--precision", choices=["fp32", "int8", "both"], default="fp32")
    ap.add_argument("--processes", default="1,2", help="comma-separated process counts")
    ap.add_argument(
        "--profile-episodes", type=int, default=4, help="episodes profiled stage by stage (0: none)"
    )
    ap.add_argument("--write", action="store_true", help="append the results to BENCHMARKS.md")
    args = ap.parse_args(argv)

    bundle = args.bundle or (DEMO_BUNDLES_DIR / "candidate")
    cfg = load_simulation_config()
    runs = plan_runs(cfg, "benchmark")
    # Spread the episode budget over the categories (interleaved), all 30 s long.
    by_cat: dict[str, list] = {}
    for r in runs:
        by_cat.setdefault(r.category, []).append(r)
    picked = [r for group in zip(*by_cat.values(), strict=False) for r in group][: args.episodes]
    counts = [int(p) for p in args.processes.split(",")]
    load_before = os.getloadavg()
    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="simbench-engine-") as tmp:
        fp32, contract, trained = export_engine(bundle, Path(tmp) / "model.onnx")
        engines = []
        if args.precision in ("fp32", "both"):
            engines.append(("fp32", fp32))
        if args.precision in ("int8", "both"):
            engines.append(("int8", int8_engine(fp32, contract, Path(tmp) / "int8")))
        profile = (
            _profile(engines[0][1], contract, picked[: args.profile_episodes])
            if args.profile_episodes
            else None
        )
        if profile is not None:
            print(
                f"profile ({engines[0][0]}, {profile['episodes']} episodes, {profile['steps']} steps, CPU ms per step, "
                f"load average {profile['load'][0]:.1f}):"
            )
            print(_profile_table(profile))
        ceilings = {precision: engine_ceiling(path, contract) for precision, path in engines}
        for precision, c in ceilings.items():
            print(
                f"{precision} engine alone: {c['engine_ms']:.2f} CPU ms/frame -> at most {c['ceiling']:.1f} "
                "episodes/min on 2 unshared cores if nothing else ran"
            )
        for precision, path in engines:
            for n in counts:
                r = _measure(path, contract, picked, n, f"bench-{precision}")
                results.append((precision, r))
                print(
                    f"{precision} {n} process(es): {r['episodes_per_min']:.1f} episodes/min "
                    f"({r['episodes_per_min_per_core']:.1f}/core), {r['wall_s']:.1f} s wall for {r['episodes']} episodes "
                    f"({r['full_length']} full length, {r['collisions']} collisions), "
                    f"median {r['s_per_episode_median']:.2f} s wall / {r['cpu_s_per_episode_median']:.2f} s CPU "
                    f"per 30-s episode; load average {os.getloadavg()[0]:.1f}"
                )
    load_after = os.getloadavg()
    rows = [
        "| engine | processes | episodes/min | per core | scaling | wall s / episode | CPU s / episode "
        "| episodes/min per unshared core (CPU time) | episodes (full length) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for precision in sorted({p for p, _ in results}):
        base = next((r for p, r in results if p == precision and r["processes"] == 1), None)
        for p, r in results:
            if p != precision:
                continue
            scale = f"{r['episodes_per_min'] / base['episodes_per_min']:.2f}x" if base else "-"
            rows.append(
                f"| ORT {precision} | {r['processes']} | {r['episodes_per_min']:.1f} | {r['episodes_per_min_per_core']:.1f} | "
                f"{scale} | {r['s_per_episode_median']:.2f} | {r['cpu_s_per_episode_median']:.2f} | "
                f"{r['cpu_capacity_per_core']:.1f} | {r['episodes']} ({r['full_length']}) |"
            )
            if r["processes"] == 2:
                ok = r["episodes_per_min"] >= TARGET_EPISODES_PER_MIN
                c = ceilings[precision]
                verdicts.append(
                    f"ORT {precision}, 2 processes: >= {TARGET_EPISODES_PER_MIN:g} episodes/min: "
                    f"{'yes' if ok else 'NO'} ({r['episodes_per_min']:.1f}; CPU-bound capacity of 2 unshared cores "
                    f"{2 * r['cpu_capacity_per_core']:.1f}; the engine alone, {c['engine_ms']:.2f} CPU ms/frame, "
                    f"caps it at {c['ceiling']:.1f})"
                )
    table = "\n".join(rows)
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(table)
    for v in verdicts:
        print(v)
    if args.write:
        lines = [
            *cpu_section_head(
                "Simulation (CPU)",
                f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (shared machine)",
            ),
            f"- engine: {contract.model_name} {contract.version}{'' if trained else ' (untrained: detects nothing, the ego collides)'}, "
            "ONNX Runtime on CPU, 1 intra-op thread per process, OMP_WAIT_POLICY=PASSIVE",
            f"- workload: {len(picked)} episodes of 30 s from the `benchmark` sweep ({', '.join(sorted({r.category for r in picked}))}), "
            "5 Hz: render 150x600 -> 96x384, weather transform, engine, decode, tracker + controller, 1 episode per shard; "
            "episodes/min = simulated seconds / 30 per wall minute, process start-up included",
            "",
            *(
                ["Profile (CPU ms per step, in one process):", "", _profile_table(profile), ""]
                if profile
                else []
            ),
            table,
            "",
            *[f"- {v}" for v in verdicts],
        ]
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
