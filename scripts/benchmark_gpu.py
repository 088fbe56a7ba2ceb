"""GPU path of the detector without TensorRT: PyTorch eager, CUDA graphs and AOTInductor, FP32 and FP16.

For each mode x precision: build time, the packaging equivalence check against the bundle's
PyTorch program on the CPU (the tolerances of config/packaging.yaml), COCO mAP on validation
frames next to the CPU reference's, and latency per batch size on the device (CUDA events,
input resident) and host to host (numpy in and out). Ratios are against GPU eager FP32 at
the same batch and against the PyTorch CPU reference on this machine.

    python scripts/benchmark_gpu.py [--bundle demo/bundles/candidate] [--data DIR_WITH_golden_val.json]
        [--batches 1,8,32] [--iterations 200] [--json out.json] [--markdown out.md]

Needs a CUDA build of PyTorch and a CUDA device (exits 2 naming what is missing otherwise).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adas.detector.data import CocoFrames  # noqa: E402
from adas.intake.bundle import validate_bundle  # noqa: E402
from adas.intake.model import load_model  # noqa: E402
from adas.packaging.config import load_packaging_config  # noqa: E402
from adas.packaging.equivalence import ModuleReference, check_equivalence, task_map_drop  # noqa: E402
from adas.packaging.torch_cuda import (  # noqa: E402
    MODES,
    PRECISIONS,
    CudaUnavailable,
    TorchCudaEngine,
    measure_cuda_latency,
    require_cuda,
)

MAP_SCORE_THRESHOLD = 0.05  # COCO AP needs the low-score tail (config/evaluation.yaml uses the same)


def _cpu_latency_ms(module: torch.nn.Module, shape: tuple[int, ...], batch: int, iterations: int) -> float:
    x = torch.randn(batch, *shape).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        for _ in range(5):
            module(x)
        samples = []
        for _ in range(iterations):
            t0 = time.perf_counter()
            module(x)
            samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, default=REPO_ROOT / "demo" / "bundles" / "candidate")
    ap.add_argument("--data", type=Path, default=None, help="folder with golden_val.json and its frames")
    ap.add_argument("--frames", type=int, default=200, help="validation frames for equivalence and mAP")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--modes", default=",".join(MODES), help=f"subset of {','.join(MODES)}")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    try:
        device = require_cuda()
    except CudaUnavailable as exc:
        print(f"benchmark_gpu: {exc}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as work:  # every intake check, checksums and sandbox included
        contract = validate_bundle(args.bundle, Path(work)).contract
    reference = load_model(args.bundle, contract)
    cfg = load_packaging_config()
    shape = tuple(contract.input.shape[1:])
    names = [o.name for o in contract.outputs]
    batches = [int(b) for b in args.batches.split(",")]
    val = None
    if args.data is not None:
        val = CocoFrames.load(args.data / "golden_val.json", limit=args.frames)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    cpu_ms = {b: _cpu_latency_ms(reference, shape, b, max(10, args.iterations // 10)) for b in batches}
    rows: list[dict] = []
    quality: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in PRECISIONS:
            for mode in args.modes.split(","):
                print(f"{mode}/{precision}: building...", flush=True)
                engine = TorchCudaEngine(
                    reference, names, shape, mode=mode, precision=precision, package_dir=tmp
                )
                eq = check_equivalence(
                    ModuleReference(reference, names),
                    engine,
                    contract,
                    cfg,
                    precision,
                    None if val is None else val.frames,
                    0,
                )
                q = {
                    "mode": mode,
                    "precision": precision,
                    "build_s": round(engine.build_s, 1),
                    "package_mb": round(engine.package_path.stat().st_size / 2**20, 1)
                    if engine.package_path
                    else None,
                    "equivalence": "PASS" if eq.passed else "FAIL: " + "; ".join(eq.failures),
                    "max_abs": {h: e.max_abs for h, e in eq.heads.items()},
                    "decode_matched": f"{eq.decode.matched}/{eq.decode.reference_detections}",
                }
                if val is not None:
                    ap_ref, ap_eng, drop = task_map_drop(
                        ModuleReference(reference, names),
                        engine,
                        contract,
                        val.coco,
                        val.image_ids,
                        val.frames,
                        MAP_SCORE_THRESHOLD,
                    )
                    q |= {
                        "map_cpu_reference": round(ap_ref, 2),
                        "map_engine": round(ap_eng, 2),
                        "map_drop": round(drop, 3),
                    }
                quality.append(q)
                print("   ", json.dumps(q), flush=True)
                for b in batches:
                    lat = measure_cuda_latency(engine, b, iterations=args.iterations)
                    rows.append(lat.to_row() | {"cpu_reference_ms": round(cpu_ms[b], 3)})
                    print(
                        f"    batch {b}: device p50 {lat.device_ms_p50:.3f} ms, host p50 {lat.host_ms_p50:.3f} ms, "
                        f"{lat.frames_per_s:.0f} frames/s",
                        flush=True,
                    )
                del engine
                torch.cuda.empty_cache()
    base = {
        (r["batch_size"]): r["device_ms_p50"]
        for r in rows
        if r["mode"] == "eager" and r["precision"] == "fp32"
    }
    for r in rows:
        b = base.get(r["batch_size"])
        r["speedup_vs_gpu_eager_fp32"] = round(b / r["device_ms_p50"], 2) if b else None
        r["speedup_vs_cpu_reference_host"] = round(r["cpu_reference_ms"] / r["host_ms_p50"], 1)
    machine = {
        "gpu": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "cpu_threads_for_reference": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": f"{datetime.now(UTC):%Y-%m-%d}",
    }
    md = [
        f"- **Machine:** {machine['gpu']}, PyTorch {machine['torch']} (CUDA {machine['cuda']}, cuDNN "
        f"{machine['cudnn']}); **date:** {machine['date']}; bundle `{contract.model_name} {contract.version}`; "
        f"`python scripts/benchmark_gpu.py --batches {args.batches} --iterations {args.iterations}`"
        + (f" on {args.frames} golden_val frames" if val is not None else " (random inputs only)")
        + ".",
        "",
        "| mode | precision | build s | equivalence | mAP engine / CPU ref | max abs (heatmap, box_size, offset) |",
        "|---|---|---|---|---|---|",
    ]
    for q in quality:
        m = q["max_abs"]
        maps = f"{q['map_engine']} / {q['map_cpu_reference']}" if "map_engine" in q else "n/a"
        md.append(
            f"| {q['mode']} | {q['precision']} | {q['build_s']} | {q['equivalence'][:60]} | {maps} | "
            + ", ".join(f"{m[n]:.2g}" for n in names)
            + " |"
        )
    md += [
        "",
        "| mode | precision | batch | device p50 ms | host p50 ms | frames/s | vs GPU eager FP32 | vs CPU ref (host) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['mode']} | {r['precision']} | {r['batch_size']} | {r['device_ms_p50']:.3f} | {r['host_ms_p50']:.3f} | "
            f"{r['frames_per_s']:.0f} | {r['speedup_vs_gpu_eager_fp32']}x | {r['speedup_vs_cpu_reference_host']}x |"
        )
    md.append("")
    md.append(
        "CPU reference: the bundle's PyTorch program on "
        f"{machine['cpu_threads_for_reference']} CPU threads of the same machine, p50 ms per batch: "
        + ", ".join(f"batch {b}: {cpu_ms[b]:.2f}" for b in batches)
        + "."
    )
    text = "\n".join(md)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "quality": quality, "latency": rows}, indent=1))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    failed = [q for q in quality if q["equivalence"] != "PASS"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
