"""Benchmark the CPU packaging path: PyTorch eager FP32 vs ONNX Runtime FP32 vs ONNX Runtime INT8.

    python scripts/benchmark_packaging.py [--bundle demo/bundles/candidate] [--data .adas/datasets/demo]
        [--rounds 20] [--calibration-frames 128] [--load quiet loaded] [--target-isa avx512_vnni]
        [--compare-navigator] [--equivalence] [--write]

Prints batch-1 p50/p95 of each runtime (each in its own subprocess; they take turns window by
window so the load of a shared machine hits them alike; speedups are medians of per-round paired
ratios), quiet and under the standard background load (one CPU burner pinned to core 0) in the
same run, the speedups vs eager, the INT8 (and FP32) COCO mAP@[.5:.95] drop on the validation
split, and the wall time of building the CPU engines (export + FP32 + INT8 with calibration and
per-layer fallback). The INT8 recipe follows ``--target-isa`` (default: this host's level), as
packaging follows the target's ``isa``. ``--compare-navigator`` adds Model Navigator's ONNX Runtime
pick: the FP32 export in a session with ONNX Runtime's defaults, which is what its OnnxCPU runner
builds (``InferenceSession(path, providers=["CPUExecutionProvider"])``).

Targets (#16): ORT INT8 >= 8x eager quiet and >= 6x loaded, at <= 0.2 AP drop on a VNNI target
(<= 1.0 elsewhere); ORT FP32 >= 3x quiet and >= 2.5x loaded; INT8 >= 2x Model Navigator's pick.

Without ``--bundle`` it uses ``demo/bundles/candidate`` when present, else an untrained
detector in a temporary directory (latency only means something then). Without ``--data``
it uses ``.adas/datasets/demo`` when present; without a dataset there is no mAP and the INT8
engine is calibrated on random frames. ``--write`` appends a "Packaging (CPU)" section to
BENCHMARKS.md (append only: other benchmarks share the file).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Before torch loads OpenMP: the parent's own torch threads must not spin while children measure.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adas.cpu_isa import ISA_LEVELS, Isa, has_vnni, host_isa  # noqa: E402
from adas.datasets.slices import load_slices  # noqa: E402
from adas.detector.bundle import load_bundle_model, read_contract, write_bundle  # noqa: E402
from adas.detector.data import CocoFrames, load_manifest  # noqa: E402
from adas.detector.model import CenterNet  # noqa: E402
from adas.intake.calibration import balanced_shard  # noqa: E402
from adas.intake.contract import Lineage, Normalization  # noqa: E402
from adas.packaging.config import default_packaging_config  # noqa: E402
from adas.packaging.equivalence import ModuleReference, check_equivalence, task_map_drop  # noqa: E402
from adas.packaging.export import export_onnx  # noqa: E402
from adas.packaging.latency import Comparison, LatencySpec, compare_latency  # noqa: E402
from adas.packaging.ort_engines import OrtEngine, build_fp32_engine  # noqa: E402
from adas.packaging.ort_int8 import build_int8_engine  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_burner, cpu_section_head  # noqa: E402

DEFAULT_BUNDLE = REPO_ROOT / "demo" / "bundles" / "candidate"
DEFAULT_DATA = REPO_ROOT / ".adas" / "datasets" / "demo"
# COCO AP needs the low-score tail; config/evaluation.yaml evaluates at the same threshold.
MAP_SCORE_THRESHOLD = 0.05
CALIBRATION_STRATA = ["clear_day", "night", "fog", "rain", "snow", "glare", "density_dense"]


def _untrained_bundle(tmp: Path) -> Path:
    torch.manual_seed(0)
    return write_bundle(
        CenterNet().eval(),
        tmp / "untrained",
        version="0.0.1",
        model_name="untrained-detector",
        task="vehicle-detection-2d",
        lineage=Lineage(training_run_id="benchmark", dataset_tag="none", git_sha="0000000"),
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )


def _dataset_tag(data: Path | None) -> str:
    try:
        return json.loads((data / "dataset.json").read_text())["tag"] if data else "-"
    except (OSError, KeyError, ValueError):
        return str(data)


def _lineage_tag(bundle: Path) -> str:
    try:
        return json.loads((bundle / "lineage.json").read_text())["dataset_tag"]
    except (OSError, KeyError, ValueError):
        return "?"


def _calibration_frames(data: Path | None, n: int, shape: tuple[int, int]) -> tuple[np.ndarray, str]:
    """A slice-balanced shard of the validation split (as the calibration_shard asset draws it)."""
    if data is None:
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, *shape, 3), dtype=np.uint8), f"{n} random frames (no dataset)"

    coco = load_manifest(data / "golden_val.json")
    catalog = load_slices()
    strata = [s for s in CALIBRATION_STRATA if catalog.image_ids(coco, s)]
    ids, _ = balanced_shard(coco, catalog, n, strata, seed=0)
    keep = set(ids)
    frames = CocoFrames.load(data / "golden_val.json")
    sel = [i for i, im in enumerate(frames.image_ids) if im in keep]
    return frames.frames[sel], f"{len(sel)} golden_val frames balanced over {', '.join(strata)}"


def _navigator_version() -> str:
    """Model Navigator's version where it installs; its ORT CPU session is ORT's defaults either way."""
    try:
        return f"triton-model-navigator {importlib.metadata.version('triton-model-navigator')} installed"
    except importlib.metadata.PackageNotFoundError:
        return "not installed here: the identical ORT settings, measured without it"


def _latency_table(
    runs: dict[str, Comparison], labels: dict[str, str], maps: dict[str, tuple[float, float, float]]
) -> str:
    loads = list(runs)
    head = (
        "| runtime | "
        + " | ".join(f"{load} p50 ms | {load} p95 ms | {load} x eager" for load in loads)
        + " | mAP@[.5:.95] | drop (points) |"
    )
    rows = [head, "|---" * (3 * len(loads) + 3) + "|"]
    ap_ref = next(iter(maps.values()))[0] if maps else None
    for key in next(iter(runs.values())).per_runtime:
        cells = []
        for run in runs.values():
            lat = run.per_runtime[key]
            cells.append(f"{lat.p50_ms:.2f} | {lat.p95_ms:.2f} | {run.speedup_vs_baseline[key]:.2f}x")
        if key == "eager" and ap_ref is not None:
            ap_s, drop_s = f"{ap_ref:.2f}", "-"
        elif key in maps:
            ap_s, drop_s = f"{maps[key][1]:.2f}", f"{maps[key][2]:.2f}"
        else:
            ap_s, drop_s = "-", "-"
        rows.append(f"| {labels[key]} | " + " | ".join(cells) + f" | {ap_s} | {drop_s} |")
    return "\n".join(rows)


# #16's targets: (runtime, load) -> minimum speed-up over eager, paired p50.
SPEEDUP_TARGETS = {
    ("ort_fp32", "quiet"): 3.0,
    ("ort_fp32", "loaded"): 2.5,
    ("ort_int8", "quiet"): 8.0,
    ("ort_int8", "loaded"): 6.0,
}
NAVIGATOR_TARGET = 2.0
INT8_DROP_TARGET = {True: 0.2, False: 1.0}  # AP points, by whether the target has VNNI


def _verdicts(
    runs: dict[str, Comparison], maps: dict[str, tuple[float, float, float]], target_isa: Isa | None
) -> list[str]:
    out = []
    for (key, load), want in SPEEDUP_TARGETS.items():
        if load in runs:
            got = runs[load].speedup_vs_baseline[key]
            quarter = runs[load].speedup_quiet_quartile[key]
            out.append(
                f"{key} >= {want:g}x eager ({load}): {'yes' if got >= want else 'NO'} "
                f"(paired {got:.2f}x, least contended quarter {quarter:.2f}x)"
            )
    for load, run in runs.items():
        if "navigator" in run.per_runtime:
            ahead = run.paired_ratio("navigator", "ort_int8")
            out.append(
                f"ort_int8 >= {NAVIGATOR_TARGET:g}x Model Navigator's ORT pick ({load}): "
                f"{'yes' if ahead >= NAVIGATOR_TARGET else 'NO'} (paired {ahead:.2f}x)"
            )
    if "ort_int8" in maps:
        vnni = has_vnni(target_isa)
        limit = INT8_DROP_TARGET[vnni]
        drop = maps["ort_int8"][2]
        out.append(
            f"INT8 mAP drop <= {limit:g} point ({'VNNI' if vnni else 'non-VNNI'} target): "
            f"{'yes' if drop <= limit else 'NO'} ({drop:.2f})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--rounds", type=int, default=20, help="interleaved latency windows per runtime")
    ap.add_argument("--calibration-frames", type=int, default=128)
    ap.add_argument("--map-frames", type=int, default=0, help="validation frames for mAP (0: all)")
    ap.add_argument("--equivalence", action="store_true", help="also run the FP32/INT8 equivalence checks")
    ap.add_argument("--fp32-mode", choices=["optimized", "plain"], default="optimized")
    ap.add_argument(
        "--load",
        nargs="+",
        choices=["quiet", "loaded"],
        default=["quiet", "loaded"],
        help="measure quiet and/or under the standard background load (one core busy), in this run",
    )
    ap.add_argument(
        "--target-isa",
        choices=[*ISA_LEVELS, "none"],
        default=None,
        help="the INT8 recipe's target (default: this host's level; none: the recipe right on every CPU)",
    )
    ap.add_argument(
        "--compare-navigator",
        action="store_true",
        help="also time Model Navigator's ONNX Runtime pick (the FP32 export, ORT session defaults)",
    )
    ap.add_argument("--write", action="store_true", help="append the results to BENCHMARKS.md")
    args = ap.parse_args(argv)

    cfg = default_packaging_config()
    target_isa: Isa | None = None if args.target_isa == "none" else (args.target_isa or host_isa())
    int8_recipe = cfg.int8.recipe("onnxruntime", target_isa)
    ort_version = importlib.metadata.version("onnxruntime")
    navigator_desc = _navigator_version() if args.compare_navigator else ""
    tmp = Path(tempfile.mkdtemp(prefix="bench-packaging-"))
    bundle = args.bundle or (DEFAULT_BUNDLE if (DEFAULT_BUNDLE / "contract.yaml").exists() else None)
    trained = bundle is not None
    bundle = bundle or _untrained_bundle(tmp)
    data = args.data or (DEFAULT_DATA if (DEFAULT_DATA / "golden_val.json").exists() else None)
    contract = read_contract(bundle)
    module = load_bundle_model(bundle)
    reference = ModuleReference(module, [o.name for o in contract.outputs])
    _, _, h, w = contract.input.shape
    print(f"bundle: {bundle} ({contract.model_name} {contract.version}{'' if trained else ', UNTRAINED'})")
    print(f"data:   {data or '-'} ({_dataset_tag(data)}; bundle trained on {_lineage_tag(bundle)})")

    # Other jobs on a shared machine inflate every latency: recorded next to the numbers.
    load_before = os.getloadavg()[0]
    calib, calib_desc = _calibration_frames(data, args.calibration_frames, (h, w))
    t0 = time.perf_counter()
    export = export_onnx(module, contract, tmp / "model.onnx", opset=cfg.onnx.opset)
    fp32 = build_fp32_engine(export.path, tmp / "fp32" / "model.onnx", mode=args.fp32_mode)
    int8 = build_int8_engine(
        export.path, calib, contract, tmp / "int8", cfg.int8, runtime="onnxruntime", target_isa=target_isa
    )
    build_s = time.perf_counter() - t0
    print(f"built CPU engines in {build_s:.1f} s (INT8 fallback analysis {int8.fallback_seconds:.1f} s)")
    print(f"INT8: {calib_desc}; {int8.quantized_nodes} nodes INT8, excluded: {int8.excluded_nodes}")

    # The runtimes live in their own subprocesses and take turns window by window, so the load of
    # a shared machine hits them alike; speedups are paired per-round ratios. Each load state is
    # one such comparison: quiet, then with the standard background load (one core busy).
    c = contract.input.shape[1]
    in_name = contract.input.name
    specs = {
        "eager": LatencySpec("torch", bundle, in_name, (c, h, w)),
        "ort_fp32": LatencySpec("ort", fp32.path, in_name, (c, h, w)),
        "ort_int8": LatencySpec("ort", int8.path, in_name, (c, h, w)),
    }
    if args.compare_navigator:
        specs["navigator"] = LatencySpec("ort-default", export.path, in_name, (c, h, w))
    runs: dict[str, Comparison] = {}
    for load in args.load:
        t_lat = time.perf_counter()
        with cpu_burner(active=load == "loaded"):
            runs[load] = compare_latency(specs, "eager", batch_size=1, rounds=args.rounds, config=cfg)
        print(f"latency ({load}): {args.rounds} interleaved rounds in {time.perf_counter() - t_lat:.0f} s")

    maps: dict[str, tuple[float, float, float]] = {}
    map_desc = "-"
    if data is not None:
        val = CocoFrames.load(data / "golden_val.json", limit=args.map_frames or None)
        map_desc = f"golden_val, {len(val.image_ids)} frames, score threshold {MAP_SCORE_THRESHOLD}"
        for name, path in (("ort_fp32", fp32.path), ("ort_int8", int8.path)):
            maps[name] = task_map_drop(
                reference,
                OrtEngine(path, contract=contract),
                contract,
                val.coco,
                val.image_ids,
                val.frames,
                score_threshold=MAP_SCORE_THRESHOLD,
            )

    equivalence: dict[str, Any] = {}
    if args.equivalence:
        frames = CocoFrames.load(data / "golden_val.json", limit=200).frames if data else None
        for name, path, prec in (("ort_fp32", fp32.path, "fp32"), ("ort_int8", int8.path, "int8")):
            rep = check_equivalence(
                reference, OrtEngine(path, contract=contract), contract, cfg, prec, frames, 0
            )
            equivalence[name] = rep
            print(
                f"equivalence {name}: {'PASS' if rep.passed else 'FAIL'} in {rep.seconds:.1f} s {rep.failures}"
            )

    labels = {
        "eager": "PyTorch eager FP32",
        "ort_fp32": "ONNX Runtime FP32",
        "ort_int8": f"ONNX Runtime INT8 (QDQ, {'reduce_range' if int8_recipe.reduce_range else '8-bit weights'})",
        "navigator": "Model Navigator's ORT pick (FP32, session defaults)",
    }
    table = _latency_table(runs, labels, maps)
    verdicts = _verdicts(runs, maps, target_isa)
    print()
    print(table)
    print()
    print("\n".join(verdicts))

    if args.write:
        lines = [
            *cpu_section_head(
                "Packaging (CPU)",
                f"{cfg.latency.intra_op_threads} intra-op threads, OMP_WAIT_POLICY=PASSIVE, ORT spinning off; "
                f"load average during the run {load_before:.1f} -> {os.getloadavg()[0]:.1f} (shared machine)",
            ),
            f"- bundle: {contract.model_name} {contract.version}{'' if trained else ' (untrained)'} "
            f"(trained on {_lineage_tag(bundle)}); data: {_dataset_tag(data)}",
            f"- protocol: each runtime in its own subprocess, warm-up {cfg.latency.warmup_runs}, then "
            f"{args.rounds} rounds of one {cfg.latency.window_size}-call window each, taking turns; "
            "percentiles over all windows; speedup = median of per-round paired p50 ratios (verdict) "
            "and ratio of the 25th-percentile window p50s (least contended quarter)",
            f"- ISA: host {host_isa() or 'none'}, target {target_isa or 'any'}; onnxruntime {ort_version}",
            "- loaded = the standard background load: one CPU burner pinned to core 0 "
            "(`scripts/benchmark_report.py:cpu_burner`)",
            *(
                [
                    "- Model Navigator's ORT pick: the FP32 export in `InferenceSession(path, "
                    "providers=['CPUExecutionProvider'])` with ONNX Runtime's default session options, "
                    f"what its OnnxCPU runner builds ({navigator_desc})"
                ]
                if args.compare_navigator
                else []
            ),
            f"- INT8: ORT static QDQ, {cfg.int8.calibration_method}, per-channel, {calib_desc}; "
            f"{int8.quantized_nodes} nodes INT8, {len(int8.excluded_nodes)} kept FP32 "
            f"({', '.join(sorted(int8.excluded_nodes)) or 'none'})",
            f"- mAP: {map_desc}",
            f"- build of all CPU engines (export + FP32 + INT8 incl. calibration and fallback): {build_s:.1f} s",
            "- reproduce: `python scripts/benchmark_packaging.py"
            + (" --equivalence" if args.equivalence else "")
            + (" --compare-navigator" if args.compare_navigator else "")
            + f" --target-isa {target_isa or 'none'} --load {' '.join(args.load)} --rounds {args.rounds} --write`",
            "",
            table,
            "",
            *[f"- {v}" for v in verdicts],
        ]
        if equivalence:
            lines += [
                f"- equivalence {k}: {'pass' if r.passed else 'FAIL'} ({r.random_inputs} random + "
                f"{r.real_frames} real frames, {r.seconds:.1f} s)"
                for k, r in equivalence.items()
            ]
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
