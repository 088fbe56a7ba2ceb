"""Quantization sensitivity: FP32 vs FP16 vs INT8 of one device, per slice, on the same frames.

Input is a dict ``precision -> Predictions`` (the stored predictions of each precision's
evaluation). The reference is the highest precision present (fp32, else fp16). Per slice: AP of
every precision and its delta to the reference; per precision: agreement of its detections with
the reference's on the same frames (matched-box IoU, score drift, missing / extra detections at
the operating threshold). A slice losing more than ``max_drop_points`` AP points is flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from adas.detector.postprocess import box_iou
from adas.evaluation.runner import Predictions
from adas.evaluation.slices import SliceSpec, slice_metrics

PRECISION_ORDER = ("fp32", "fp16", "int8")


def reference_precision(precisions: Sequence[str]) -> str | None:
    for p in PRECISION_ORDER:
        if p in precisions:
            return p
    return sorted(precisions)[0] if precisions else None


def agreement(
    reference: Predictions, other: Predictions, operating_threshold: float, iou_threshold: float = 0.5
) -> dict[str, float | int | None]:
    """How closely ``other`` reproduces ``reference``'s confident detections on shared frames."""
    ref_by, oth_by = reference.by_image(), other.by_image()
    shared = [i for i in reference.image_ids if i in oth_by]
    ious: list[float] = []
    score_drift: list[float] = []
    n_ref = n_oth = missing = extra = 0
    for i in shared:
        a, b = ref_by[i], oth_by[i]
        ka, kb = a.scores >= operating_threshold, b.scores >= operating_threshold
        ab, asc, ac = a.boxes[ka], a.scores[ka], a.category_ids[ka]
        bb, bsc, bc = b.boxes[kb], b.scores[kb], b.category_ids[kb]
        n_ref += len(ab)
        n_oth += len(bb)
        iou = np.where(ac[:, None] == bc[None, :], box_iou(ab, bb), 0.0)
        taken: set[int] = set()
        for k in range(len(ab)):
            row = iou[k].copy() if iou.size else np.zeros(0)
            for j in taken:
                row[j] = -1
            j = int(np.argmax(row)) if row.size else -1
            if j >= 0 and row[j] >= iou_threshold:
                taken.add(j)
                ious.append(float(row[j]))
                score_drift.append(abs(float(asc[k]) - float(bsc[j])))
            else:
                missing += 1
        extra += len(bb) - len(taken)
    return {
        "frames": len(shared),
        "reference_detections": n_ref,
        "detections": n_oth,
        "mean_matched_iou": float(np.mean(ious)) if ious else None,
        "mean_abs_score_drift": float(np.mean(score_drift)) if score_drift else None,
        "missing_fraction": missing / n_ref if n_ref else None,
        "extra_fraction": extra / n_oth if n_oth else None,
    }


def quantization_sensitivity(
    gt: Mapping[str, Any],
    predictions: Mapping[str, Predictions],
    slices: Sequence[SliceSpec],
    *,
    operating_threshold: float,
    max_drop_points: float = 1.0,
) -> dict[str, Any]:
    """Per-slice AP of every precision vs the reference precision, agreement, flagged slices."""
    precisions = [p for p in PRECISION_ORDER if p in predictions] + sorted(
        p for p in predictions if p not in PRECISION_ORDER
    )
    ref = reference_precision(precisions)
    if ref is None:
        return {
            "precisions": [],
            "reference": None,
            "rows": [],
            "flagged": [],
            "agreement": {},
            "note": "no precision of this device has been evaluated yet",
        }
    # Compare on the frames every precision was evaluated on.
    common = set(predictions[ref].image_ids)
    for p in precisions:
        common &= set(predictions[p].image_ids)
    specs = [
        SliceSpec(s.name, [i for i in s.image_ids if i in common], s.critical, s.description) for s in slices
    ]
    metrics = {
        p: slice_metrics(gt, predictions[p].subset(sorted(common)).records(), specs) for p in precisions
    }
    rows: list[dict[str, Any]] = []
    flagged: list[dict[str, Any]] = []
    for s in specs:
        ref_ap = metrics[ref][s.name]["AP"]
        for p in precisions:
            m = metrics[p][s.name]
            ap = None if m["AP"] < 0 else float(m["AP"])
            delta = None if ap is None or ref_ap < 0 else ap - float(ref_ap)
            row = {
                "slice": s.name,
                "critical": s.critical,
                "precision": p,
                "images": int(m["num_images"]),
                "AP": ap,
                "AP50": None if m["AP50"] < 0 else float(m["AP50"]),
                "delta_AP_vs_reference": delta,
            }
            rows.append(row)
            if p != ref and delta is not None and delta < -max_drop_points / 100.0:
                flagged.append(
                    {"slice": s.name, "precision": p, "delta_AP_points": 100 * delta, "critical": s.critical}
                )
    agree = {
        p: agreement(predictions[ref], predictions[p], operating_threshold) for p in precisions if p != ref
    }
    return {
        "precisions": precisions,
        "reference": ref,
        "frames": len(common),
        "max_drop_points": max_drop_points,
        "rows": rows,
        "flagged": flagged,
        "agreement": agree,
    }


def sensitivity_frame(report: Mapping[str, Any]) -> pl.DataFrame:
    """Wide table: one row per slice, ``AP_<precision>`` and ``delta_<precision>`` columns."""
    precisions = list(report.get("precisions", []))
    by_slice: dict[str, dict[str, Any]] = {}
    for r in report.get("rows", []):
        row = by_slice.setdefault(r["slice"], {"slice": r["slice"], "critical": r["critical"]})
        row[f"AP_{r['precision']}"] = r["AP"]
        if r["precision"] != report.get("reference"):
            row[f"delta_{r['precision']}"] = r["delta_AP_vs_reference"]
    schema: dict[str, Any] = {"slice": pl.String, "critical": pl.Boolean}
    for p in precisions:
        schema[f"AP_{p}"] = pl.Float64
    for p in precisions:
        if p != report.get("reference"):
            schema[f"delta_{p}"] = pl.Float64
    return pl.DataFrame(
        [{k: row.get(k) for k in schema} for row in by_slice.values()], schema=schema, orient="row"
    )


def markdown(report: Mapping[str, Any]) -> str:
    precisions = list(report.get("precisions", []))
    ref = report.get("reference")
    if not precisions:
        return report.get("note", "no precisions evaluated")
    df = sensitivity_frame(report)
    others = [p for p in precisions if p != ref]
    head = (
        "| slice | "
        + " | ".join(f"AP {p}" for p in precisions)
        + "".join(f" | delta {p} (pts)" for p in others)
        + " |"
    )
    lines = [head, "|---|" + "---|" * (len(precisions) + len(others))]

    def f(v: float | None, signed: bool = False) -> str:
        if v is None:
            return "n/a"
        return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"

    for r in df.iter_rows(named=True):
        name = f"**{r['slice']}**" if r["critical"] else r["slice"]
        cells = [f(r[f"AP_{p}"]) for p in precisions] + [f(r[f"delta_{p}"], True) for p in others]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
