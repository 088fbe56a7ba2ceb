"""Decoder cost per output kind, batch 1, K = 100 detections kept, boxes mapped to source pixels.

    python scripts/benchmark_decoders.py [--repeats 300] [--write]

Each kind decodes outputs shaped as the demo bundles' (3 classes, 160x512 letterboxed input for the
dense-family kinds, the CenterNet head at 96x384): ``heatmap`` (3x24x96 logits), ``dense`` BFN
(7 x 6,400 candidates, 2,000 above the threshold before NMS), ``queries`` (300 x 3 + 300 x 4),
``detections`` (100 packed rows), ``ragged`` (100 rows with a batch index). The figure is the median
wall time of ``adas.detector.decoders.decode`` (the one function every consumer calls), with the
load average printed beside it: on a shared 2-core machine, read the ratios between kinds.
``--write`` appends a section to BENCHMARKS.md.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adas.detector.bundle import build_contract
from adas.detector.decoders import decode
from adas.detector.dense_bundle import build_dense_contract
from adas.detector.preprocess import placement
from adas.intake.contract import Contract, Normalization
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head

K = 100
CLASSES = [(1, "car"), (2, "truck"), (3, "motorcycle")]
NORM = Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _boxes(rng: np.random.Generator, n: int, h: float, w: float) -> np.ndarray:
    x1, y1 = rng.uniform(0, w - 40, n), rng.uniform(0, h - 20, n)
    return np.stack([x1, y1, x1 + rng.uniform(5, 40, n), y1 + rng.uniform(4, 20, n)], 1).astype(np.float32)


def cases(rng: np.random.Generator) -> dict[str, tuple[Contract, dict[str, np.ndarray]]]:
    dense = build_dense_contract(
        version="1.0.0", model_name="d", task="t", normalization=NORM, classes=CLASSES,
        num_candidates=6400, score_threshold=0.3, max_detections=K,
    )  # fmt: skip
    base = dense.model_dump(mode="json")

    def variant(outputs: list[dict], post: dict) -> Contract:
        outs = [{**o, "dtype": "float32", "description": ""} for o in outputs]
        return Contract.model_validate({**base, "outputs": outs, "postprocess": post})

    common = {"score_threshold": 0.3, "max_detections": K}
    xyxy = _boxes(rng, 6400, 160, 512)
    cxcywh = np.concatenate([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1)
    probs = rng.uniform(0, 0.31, (6400, 3)).astype(np.float32)
    probs[rng.choice(6400, 2000, replace=False), rng.integers(0, 3, 2000)] = rng.uniform(0.3, 1, 2000)
    heat = build_contract(version="1.0.0", model_name="c", task="t", normalization=NORM, max_detections=K)
    logits = rng.normal(-4, 1.5, (1, 3, 24, 96)).astype(np.float32)
    rows = np.concatenate(
        [_boxes(rng, K, 160, 512), rng.uniform(0.3, 1, (K, 1)), rng.integers(0, 3, (K, 1))], 1
    )
    return {
        "heatmap": (heat, {"heatmap": logits, "box_size": rng.uniform(4, 30, (1, 2, 24, 96)).astype(np.float32),
                           "offset": rng.uniform(0, 1, (1, 2, 24, 96)).astype(np.float32)}),
        "dense": (dense, {"output0": np.concatenate([cxcywh, probs], 1).T[None].astype(np.float32)}),
        "queries": (
            variant([{"name": "scores", "shape": [-1, 300, 3]}, {"name": "boxes", "shape": [-1, 300, 4]}],
                    {"kind": "queries", "scores_output": "scores", "boxes_output": "boxes", "activation": "sigmoid", **common}),
            {"scores": rng.normal(-2, 2, (1, 300, 3)).astype(np.float32),
             "boxes": rng.uniform(0.1, 0.9, (1, 300, 4)).astype(np.float32) * [1, 1, 0.1, 0.1]},
        ),
        "detections": (
            variant([{"name": "output0", "shape": [-1, K, 6]}],
                    {"kind": "detections", "packed_output": "output0", "padding": "zero_score", **common}),
            {"output0": rows[None].astype(np.float32)},
        ),
        "ragged": (
            variant([{"name": "rows", "shape": [-1, 7]}],
                    {"kind": "ragged", "packed_output": "rows",
                     "columns": ["batch_index", "x1", "y1", "x2", "y2", "score", "label"], **common}),
            {"rows": np.concatenate([np.zeros((K, 1)), rows], 1).astype(np.float32)},
        ),
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--write", action="store_true")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    load_before = os.getloadavg()[0]
    results = {}
    for kind, (contract, outputs) in cases(rng).items():
        geometry = placement((96, 384), contract.input.height_width, contract.input.resize)
        dets = decode(outputs, contract, geometry=geometry, batch_size=1)  # warm-up, and a sanity check
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            decode(outputs, contract, geometry=geometry, batch_size=1)
            times.append((time.perf_counter() - t0) * 1000)
        results[kind] = (statistics.median(times), len(dets[0]))
        print(f"{kind:11s} {results[kind][0]:7.3f} ms  ({results[kind][1]} detections kept)", flush=True)
    load = (load_before + os.getloadavg()[0]) / 2
    print(f"load average ~{load:.1f} during the run")
    if args.write:
        lines = cpu_section_head("Decoders per output kind (CPU)", f"load average ~{load:.1f} during the run")
        lines += [
            f"- `python scripts/benchmark_decoders.py --repeats {args.repeats}`: median wall time of "
            "`adas.detector.decoders.decode`, batch 1, K = 100 kept, boxes mapped to source pixels",
            "",
            "| kind | decode (ms) | detections kept | vs heatmap |",
            "|---|---|---|---|",
        ]
        ref = results["heatmap"][0]
        lines += [f"| {k} | {ms:.3f} | {n} | {ms / ref:.2f}x |" for k, (ms, n) in results.items()]
        append_to_benchmarks("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
