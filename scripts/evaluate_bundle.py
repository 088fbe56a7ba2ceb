"""Evaluate one or more bundles on a golden split: COCO AP / AP50 overall and per slice.

    python scripts/evaluate_bundle.py demo/bundles/candidate demo/bundles/production \\
        --data .adas/datasets/demo [--split golden_test] [--markdown] [--cross-check]

Slices come from the slice catalog (``adas.datasets.slices``): ``config/slices.yaml``, or
the file given with ``--slices``. Detections use each bundle's own contract (normalization, postprocess, score
threshold) unless ``--score-threshold`` overrides it. ``--cross-check`` recomputes every
number with pycocotools and reports the largest difference to faster-coco-eval.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Set before torch loads OpenMP: on a shared 2-core machine spinning worker threads made a
# training step ~4x slower (5-6 s instead of 1.3 s per batch of 16) under contention.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from adas.datasets.slices import DEFAULT_SLICES_PATH, load_slices  # noqa: E402
from adas.detector.bundle import load_bundle_model, read_contract, run_detector  # noqa: E402
from adas.detector.coco_metrics import STAT_NAMES, coco_metrics  # noqa: E402
from adas.detector.data import CocoFrames  # noqa: E402


def slice_image_ids(coco: dict[str, Any], slices_path: Path | None) -> dict[str, list[int]]:
    """slice name -> image ids, from the slice catalog (``--slices``, default config/slices.yaml)."""
    catalog = load_slices(slices_path or DEFAULT_SLICES_PATH)
    return {name: list(catalog.image_ids(coco, name)) for name in catalog.names}


def evaluate(
    bundle: Path,
    frames: CocoFrames,
    slices: dict[str, list[int]],
    score_threshold: float | None,
    cross_check: bool,
) -> dict[str, Any]:
    contract = read_contract(bundle)
    model = load_bundle_model(bundle)
    t = time.perf_counter()
    dets = run_detector(model, frames.frames, contract, score_threshold=score_threshold)
    infer_s = time.perf_counter() - t
    records = [r for image_id, d in zip(frames.image_ids, dets, strict=True) for r in d.to_coco(image_id)]
    per_slice: dict[str, dict[str, Any]] = {}
    max_diff = 0.0
    for name, ids in slices.items():
        m = coco_metrics(frames.coco, records, image_ids=ids, backend="faster")
        if cross_check:
            ref = coco_metrics(frames.coco, records, image_ids=ids, backend="pycocotools")
            diffs = [abs(m[k] - ref[k]) for k in STAT_NAMES]
            diffs += [abs(m["per_class_AP"][c] - ref["per_class_AP"][c]) for c in m["per_class_AP"]]
            max_diff = max(max_diff, *diffs)
        per_slice[name] = m
    return {
        "bundle": str(bundle),
        "version": contract.version,
        "score_threshold": score_threshold
        if score_threshold is not None
        else contract.postprocess.score_threshold,
        "inference_seconds": round(infer_s, 2),
        "num_detections": len(records),
        "slices": per_slice,
        "max_abs_diff_vs_pycocotools": max_diff if cross_check else None,
    }


def _pct(v: float) -> str:
    return "n/a" if v < 0 else f"{100 * v:.1f}"


def print_text(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(
            f"\n{r['bundle']} (version {r['version']}, score threshold {r['score_threshold']}, "
            f"{r['num_detections']} detections, inference {r['inference_seconds']}s)"
        )
        print(f"  {'slice':<24}{'images':>7}{'gt':>7}{'AP':>7}{'AP50':>7}{'AP75':>7}")
        for name, m in r["slices"].items():
            print(
                f"  {name:<24}{m['num_images']:>7}{m['num_gt']:>7}{_pct(m['AP']):>7}{_pct(m['AP50']):>7}{_pct(m['AP75']):>7}"
            )
        per_class = r["slices"][next(iter(r["slices"]))]["per_class_AP"]
        print("  per-class AP (first slice): " + ", ".join(f"{k} {_pct(v)}" for k, v in per_class.items()))
        if r["max_abs_diff_vs_pycocotools"] is not None:
            print(
                f"  max |faster-coco-eval - pycocotools| over all numbers: {r['max_abs_diff_vs_pycocotools']:.2e}"
            )


def print_markdown(results: list[dict[str, Any]]) -> None:
    head = (
        "| slice | images | objects | "
        + " | ".join(f"{r['version']} AP | {r['version']} AP50" for r in results)
        + " |"
    )
    print(head)
    print("|" + "---|" * (3 + 2 * len(results)))
    first = results[0]["slices"]
    for name, m in first.items():
        cells = [name, str(m["num_images"]), str(m["num_gt"])]
        for r in results:
            s = r["slices"][name]
            cells += [_pct(s["AP"]), _pct(s["AP50"])]
        print("| " + " | ".join(cells) + " |")
    print()
    print("| per-class AP (all images) | " + " | ".join(r["version"] for r in results) + " |")
    print("|---|" + "---|" * len(results))
    for cls in first[next(iter(first))]["per_class_AP"]:
        print(
            f"| {cls} | "
            + " | ".join(_pct(r["slices"][next(iter(first))]["per_class_AP"][cls]) for r in results)
            + " |"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", type=Path, nargs="+", help="bundle directories")
    p.add_argument("--data", type=Path, default=REPO_ROOT / ".adas" / "datasets" / "demo")
    p.add_argument("--split", default="golden_test")
    p.add_argument("--slices", type=Path, default=None, help="slice catalog (default config/slices.yaml)")
    p.add_argument("--score-threshold", type=float, default=None, help="override the contract's threshold")
    p.add_argument("--cross-check", action="store_true", help="also compute with pycocotools and compare")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (for BENCHMARKS.md)")
    p.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = p.parse_args(argv)
    torch.set_num_threads(2)

    frames = CocoFrames.load(args.data / f"{args.split}.json", args.data)
    slices = slice_image_ids(frames.coco, args.slices)
    results = [evaluate(b, frames, slices, args.score_threshold, args.cross_check) for b in args.bundles]
    if args.markdown:
        print_markdown(results)
        if args.cross_check:
            worst = max(r["max_abs_diff_vs_pycocotools"] for r in results)
            print(
                f"\nfaster-coco-eval vs pycocotools: max abs difference {worst:.1e} over every number above."
            )
    else:
        print_text(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
