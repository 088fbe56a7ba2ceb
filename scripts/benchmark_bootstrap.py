"""Benchmark the paired bootstrap of detection metrics against naive re-evaluation.

    python scripts/benchmark_bootstrap.py [--images 700] [--resamples 2000] [--naive 50] [--write]

On a synthetic split the size of the demo's ``golden_test`` (700 frames, ~4,240 objects, 3
classes) with two models, it times:

1. matching once per image, class and IoU threshold (pycocotools' ``evaluate``), both models;
2. 2,000 paired resamples of the AP, AP50 and per-class AP deltas (plus recall at the operating
   point of the safety-critical class), overall and on each of 6 slices (target: <= 10 s on 2 cores);
3. ``--naive`` resamples done the naive way, re-running faster-coco-eval on every resampled
   image set, to give the speed-up per resample in the same run.

``--write`` appends a "Confident gates (CPU)" section to BENCHMARKS.md.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adas.detector.coco_metrics import coco_metrics
from adas.evaluation.bootstrap import MatchTable
from adas.evaluation.evidence import paired_evidence
from adas.evaluation.synthetic_detections import detections, ground_truth
from scripts.benchmark_report import append_to_benchmarks, cpu_section_head

CANDIDATE = {1: 0.9, 2: 0.85, 3: 0.62}
PRODUCTION = {1: 0.88, 2: 0.85, 3: 0.7}
N_SLICES = 6


def _naive(gt: dict, cand: list[dict], prod: list[dict], n: int, seed: int) -> float:
    """Seconds per resample when every resample re-runs COCO evaluation on both models."""
    rng = np.random.default_rng(seed)
    ids = [im["id"] for im in gt["images"]]
    start = time.perf_counter()
    for _ in range(n):
        draw = rng.choice(len(ids), size=len(ids), replace=True)
        # Duplicated images need new ids so COCOeval counts them twice.
        images, anns, dc, dp = [], [], [], []
        by_img_gt: dict[int, list[dict]] = {}
        for a in gt["annotations"]:
            by_img_gt.setdefault(a["image_id"], []).append(a)
        by_c: dict[int, list[dict]] = {}
        by_p: dict[int, list[dict]] = {}
        for d in cand:
            by_c.setdefault(d["image_id"], []).append(d)
        for d in prod:
            by_p.setdefault(d["image_id"], []).append(d)
        for new_id, k in enumerate(draw, start=1):
            old = ids[k]
            images.append({"id": new_id, "width": 384, "height": 96})
            anns += [
                {**a, "image_id": new_id, "id": len(anns) + j + 1}
                for j, a in enumerate(by_img_gt.get(old, []))
            ]
            dc += [{**d, "image_id": new_id} for d in by_c.get(old, [])]
            dp += [{**d, "image_id": new_id} for d in by_p.get(old, [])]
        resampled = {"images": images, "annotations": anns, "categories": gt["categories"]}
        coco_metrics(resampled, dc)["AP"] - coco_metrics(resampled, dp)["AP"]
    return (time.perf_counter() - start) / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=700)
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--naive", type=int, default=50)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    gt = ground_truth(args.images, seed=7, max_objects=11)  # ~6 objects per frame, as golden_test
    cand, prod = detections(gt, CANDIDATE, seed=8), detections(gt, PRODUCTION, seed=9)
    n_obj = len(gt["annotations"])
    t0 = time.perf_counter()
    MatchTable.from_coco(gt, cand), MatchTable.from_coco(gt, prod)
    t_match = time.perf_counter() - t0
    ids = [im["id"] for im in gt["images"]]
    slices = {f"slice{i}": ids[i::N_SLICES] for i in range(N_SLICES)}
    # What the evaluation runs (adas.evaluation.evidence.paired_evidence): matching both models,
    # then the paired bootstrap overall (with the class-weighted AP and motorcycle recall) and
    # on every slice (with motorcycle recall).
    t0 = time.perf_counter()
    evidence = paired_evidence(
        gt,
        cand,
        prod,
        ids,
        slices,
        class_weights={"car": 1.0, "truck": 1.0, "motorcycle": 2.0},
        recall_classes=["motorcycle"],
        resamples=args.resamples,
    )
    t_boot = time.perf_counter() - t0 - t_match
    per_resample = t_boot / (args.resamples * (1 + N_SLICES))
    naive = _naive(gt, cand, prod, args.naive, seed=1)
    ap_delta = evidence.overall["AP"]
    lines = [
        f"- split: synthetic, {args.images} frames, {n_obj} objects, 3 classes (the golden_test size); "
        f"load average before: {load[0]:.2f}",
        f"- matching once (pycocotools evaluate, both models): {t_match:.2f} s",
        f"- {args.resamples} paired resamples, overall + {N_SLICES} slices (AP, AP50, per-class AP, weighted AP, "
        f"motorcycle recall), as `paired_evidence` runs them (its time less the matching): {t_boot:.2f} s "
        "(target <= 10 s)",
        f"- per resample and scope: {per_resample * 1e3:.2f} ms; naive re-evaluation with faster-coco-eval "
        f"({args.naive} resamples, same run): {naive * 1e3:.0f} ms; speed-up {naive / per_resample:.0f}x",
        f"- example: AP delta {ap_delta.points()} points",
    ]
    print("\n".join(lines))
    if args.write:
        head = cpu_section_head("Confident gates (CPU): paired bootstrap", f"load average {load[0]:.2f}")
        append_to_benchmarks("\n".join([*head, *lines, ""]) + "\n")


if __name__ == "__main__":
    main()
