"""Benchmark every shipped detector family on the CPU path, in one run.

    python scripts/benchmark_families.py [--data .adas/datasets/demo] [--rounds 15] [--map-frames 200]
        [--triton] [--write]

For each bundle (``candidate``: CenterNet heatmap, torch.export; ``centernet-e2e``: the same weights
with the decode in the graph, ONNX; ``dense-candidate``: the YOLO-style dense family, ONNX):

* the eager baseline is the family's PyTorch module (the CenterNet program; the CenterNet wrapped in
  its in-graph decode; the dense detector with its weights read back from the bundle's ONNX);
* the ONNX graph (exported for CenterNet, the bundle's own file otherwise) is built into the ONNX
  Runtime FP32 and INT8 engines exactly as packaging builds them (calibration on a slice-balanced
  golden_val shard through the contract's preprocess, per-layer fallback, decode tail in FP32);
* batch-1 latency: eager, FP32 and INT8 take turns window by window in this process (2 threads
  each), so a shared machine's load hits them alike; speed-ups are medians of per-round ratios;
* COCO mAP@[.5:.95] of each on golden_val frames (score threshold 0.05) and the INT8 drop;
* ``--triton``: p50 of a batch-1 request through the real Triton ensemble (python-backend steps,
  FP32 engine) over HTTP, via the contract smoke test.

The machine's CPU, ISA and load average are printed with the figures. ``--write`` appends a section.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adas.cpu_isa import host_isa  # noqa: E402
from adas.datasets.slices import load_slices  # noqa: E402
from adas.detector.bundle import load_bundle_model, read_contract  # noqa: E402
from adas.detector.coco_metrics import coco_metrics  # noqa: E402
from adas.detector.data import CocoFrames, load_manifest  # noqa: E402
from adas.detector.decoders import decode  # noqa: E402
from adas.detector.dense_bundle import read_dense_weights  # noqa: E402
from adas.detector.e2e import CenterNetE2E  # noqa: E402
from adas.detector.preprocess import preprocess  # noqa: E402
from adas.evaluation.runner import predict  # noqa: E402
from adas.intake.calibration import balanced_shard  # noqa: E402
from adas.intake.contract import Contract  # noqa: E402
from adas.packaging.config import default_packaging_config  # noqa: E402
from adas.packaging.contract_smoke import run_contract_smoke  # noqa: E402
from adas.packaging.export import export_onnx  # noqa: E402
from adas.packaging.ort_engines import OrtEngine, build_fp32_engine  # noqa: E402
from adas.packaging.ort_int8 import build_int8_engine  # noqa: E402
from adas.packaging.triton_repository import write_triton_repository  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head  # noqa: E402

BUNDLES = REPO_ROOT / "demo" / "bundles"
FAMILIES = ("candidate", "centernet-e2e", "dense-candidate")
MAP_THRESHOLD = 0.05
STRATA = ["clear_day", "night", "fog", "rain", "snow", "glare", "density_dense"]


class TorchEngine:
    """An eager module behind the runner's ``Engine`` interface (named outputs)."""

    def __init__(self, module: torch.nn.Module, contract: Contract) -> None:
        self.module, self.names = module.eval(), [o.name for o in contract.outputs]

    @torch.no_grad()
    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        out = self.module(torch.from_numpy(x))
        seq = out if isinstance(out, tuple | list) else [out]
        return {n: o.numpy() for n, o in zip(self.names, seq, strict=True)}


def eager_module(name: str, contract: Contract) -> torch.nn.Module:
    """The family's PyTorch module (our own shipped bundles: trusted, loaded in-process)."""
    if name == "candidate":
        return load_bundle_model(BUNDLES / name)
    if name == "centernet-e2e":
        return CenterNetE2E(load_bundle_model(BUNDLES / "candidate"))
    return read_dense_weights(BUNDLES / name / contract.model_file, len(contract.classes))


def latency(engines: dict[str, Any], x: np.ndarray, rounds: int, window: int) -> dict[str, list[float]]:
    """Per engine, the p50 (ms) of each window; engines take turns window by window."""
    for e in engines.values():
        for _ in range(5):
            e.run(x)
    per: dict[str, list[float]] = {k: [] for k in engines}
    for _ in range(rounds):
        for k, e in engines.items():
            times = []
            for _ in range(window):
                t0 = time.perf_counter()
                e.run(x)
                times.append((time.perf_counter() - t0) * 1000)
            per[k].append(statistics.median(times))
    return per


def coco_ap(engine: Any, contract: Contract, val: CocoFrames) -> float:
    p = predict(engine, val.frames, val.image_ids, contract, score_threshold=MAP_THRESHOLD, batch_size=16)
    return 100 * coco_metrics(val.coco, p.records(), image_ids=val.image_ids)["AP"]


def triton_p50(contract: Contract, engine_path: Path, frames: np.ndarray, tmp: Path) -> float | None:
    x, geometry = preprocess(frames, contract.input)
    expected = decode(OrtEngine(engine_path, contract=contract).run(x), contract, geometry=geometry)
    repo = write_triton_repository(
        tmp / f"repo-{contract.model_name}", contract, engine_path, device="x86-cpu", precision="fp32",
        runtime="onnxruntime", serving="python-onnxruntime",
    )  # fmt: skip
    report = run_contract_smoke(repo, contract, frames, expected, tolerance=1e-3, latency_requests=30)
    if not report.passed:
        print(report.to_markdown())
    return report.latency_ms_p50.get("http")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO_ROOT / ".adas" / "datasets" / "demo")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--window", type=int, default=30)
    ap.add_argument("--map-frames", type=int, default=200)
    ap.add_argument("--calibration-frames", type=int, default=128)
    ap.add_argument("--triton", action="store_true")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    cfg = default_packaging_config()
    tmp = Path(tempfile.mkdtemp(prefix="bench-families-"))
    coco = load_manifest(args.data / "golden_val.json")
    catalog = load_slices()
    ids, _ = balanced_shard(
        coco, catalog, args.calibration_frames, [s for s in STRATA if catalog.image_ids(coco, s)]
    )
    all_val = CocoFrames.load(args.data / "golden_val.json")
    keep = set(ids)
    calib = all_val.frames[[i for i, im in enumerate(all_val.image_ids) if im in keep]]
    val = CocoFrames.load(args.data / "golden_val.json", limit=args.map_frames)
    loads = [os.getloadavg()[0]]
    rows = []
    for name in FAMILIES:
        contract = read_contract(BUNDLES / name)
        module = eager_module(name, contract)
        work = tmp / name
        work.mkdir()
        if contract.model_format == "onnx":
            graph = BUNDLES / name / contract.model_file
        else:
            graph = export_onnx(module, contract, work / "export.onnx", opset=cfg.onnx.opset).path
        t0 = time.perf_counter()
        fp32 = build_fp32_engine(graph, work / "fp32" / "model.onnx")
        int8 = build_int8_engine(graph, calib, contract, work / "int8", cfg.int8,
                                 target_isa=host_isa())  # fmt: skip
        build_s = time.perf_counter() - t0
        engines = {
            "eager": TorchEngine(module, contract),
            "fp32": OrtEngine(fp32.path, intra_op_threads=2, contract=contract),
            "int8": OrtEngine(int8.path, intra_op_threads=2, contract=contract),
        }
        x, _ = preprocess(val.frames[:1], contract.input)
        per = latency(engines, x, args.rounds, args.window)
        loads.append(os.getloadavg()[0])
        ratio = {k: statistics.median(e / v for e, v in zip(per["eager"], per[k], strict=True)) for k in per}
        aps = {k: coco_ap(e, contract, val) for k, e in engines.items()}
        tri = triton_p50(contract, fp32.path, val.frames[:4], tmp) if args.triton else None
        row = {
            "name": f"{contract.model_name} {contract.version}",
            "kind": f"{contract.postprocess.kind}, {contract.input.shape[2]}x{contract.input.shape[3]} {contract.input.resize}",
            "p50": {k: statistics.median(v) for k, v in per.items()},
            "speedup": ratio,
            "ap": aps,
            "int8_drop": aps["fp32"] - aps["int8"],
            "fp32_only": len(int8.excluded_nodes),
            "build_s": build_s,
            "triton": tri,
        }
        rows.append(row)
        print(
            f"{row['name']:28s} eager {row['p50']['eager']:.2f} ms | FP32 {row['p50']['fp32']:.2f} ms "
            f"({ratio['fp32']:.2f}x) | INT8 {row['p50']['int8']:.2f} ms ({ratio['int8']:.2f}x) | AP eager "
            f"{aps['eager']:.2f} FP32 {aps['fp32']:.2f} INT8 {aps['int8']:.2f} (drop {row['int8_drop']:.2f}) "
            f"| {row['fp32_only']} nodes FP32 | triton {tri if tri is None else f'{tri:.2f} ms'}",
            flush=True,
        )
    load = statistics.mean(loads)
    print(f"host ISA {host_isa()}; load average ~{load:.1f} during the run")
    if args.write:
        lines = cpu_section_head(
            "Detector families (CPU): eager vs ONNX Runtime FP32 / INT8, INT8 mAP drop, Triton",
            f"ISA {host_isa()}; 2 threads per runtime; load average ~{load:.1f} during the run",
        )
        lines += [
            f"- `python scripts/benchmark_families.py --rounds {args.rounds}"
            + (" --triton" if args.triton else "")
            + " --write`: batch 1, runtimes take turns window by window "
            f"({args.rounds} rounds of {args.window} calls), speed-up = median of per-round ratios; mAP on "
            f"{len(val.image_ids)} golden_val frames at score threshold {MAP_THRESHOLD}; INT8 calibrated on "
            f"{len(calib)} slice-balanced golden_val frames (the packaging recipe, target ISA = host)",
            "",
            "| bundle | kind, input | eager p50 ms | ORT FP32 p50 ms (x eager) | ORT INT8 p50 ms (x eager) "
            "| AP eager / FP32 / INT8 | INT8 drop | nodes kept FP32 | Triton p50 ms (HTTP, batch 1) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            tri = "-" if r["triton"] is None else f"{r['triton']:.2f}"
            lines.append(
                f"| {r['name']} | {r['kind']} | {r['p50']['eager']:.2f} | {r['p50']['fp32']:.2f} "
                f"({r['speedup']['fp32']:.2f}x) | {r['p50']['int8']:.2f} ({r['speedup']['int8']:.2f}x) | "
                f"{r['ap']['eager']:.2f} / {r['ap']['fp32']:.2f} / {r['ap']['int8']:.2f} | {r['int8_drop']:.2f} "
                f"| {r['fp32_only']} | {tri} |"
            )
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
