"""Primary 2D detection evaluation: COCO metrics, per-class PR curves, confusion matrix, plots.

Numbers come from :func:`adas.detector.coco_metrics.coco_metrics` (faster-coco-eval,
equal to pycocotools); PR curves are COCOeval's interpolated precision at the 101 recall
points, at IoU 0.5 and 0.75, area "all", 100 detections per image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from adas.detector.coco_metrics import coco_metrics, precision_table
from adas.evaluation.matching import confusion_matrix
from adas.evaluation.plots import png_bytes, pyplot

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


@dataclass
class PrimaryResult:
    metrics: dict[str, Any]
    pr_curves: dict[str, dict[str, list[float] | None]]
    confusion_labels: list[str]
    confusion: np.ndarray
    operating_threshold: float

    def to_json(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "pr_curves": {"recall": RECALL_POINTS.round(2).tolist(), **self.pr_curves},
            "confusion_matrix": {
                "rows": "ground truth (last: background = false positives)",
                "columns": "prediction (last: missed = false negatives)",
                "labels": self.confusion_labels,
                "counts": self.confusion.tolist(),
                "score_threshold": self.operating_threshold,
            },
        }


def pr_curves(
    gt: Mapping[str, Any], records: Sequence[Mapping[str, Any]], image_ids: Sequence[int] | None = None
) -> dict[str, dict[str, list[float] | None]]:
    """Per class: interpolated precision at the 101 recall points for IoU 0.5 and 0.75.

    ``None`` for a class without ground truth in the images (its curve is undefined).
    """
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    out: dict[str, dict[str, list[float] | None]] = {
        n: {"iou50": None, "iou75": None} for n in names.values()
    }
    table = precision_table(dict(gt), [dict(r) for r in records], image_ids)
    if table is None:
        return out
    precision, cat_ids = table
    for k, c in enumerate(cat_ids):
        for label, t in (("iou50", 0), ("iou75", 5)):
            p = precision[t, :, k, 0, -1]
            out[names[c]][label] = None if np.all(p < 0) else np.clip(p, 0, 1).round(4).tolist()
    return out


def evaluate_primary(
    gt: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    image_ids: Sequence[int],
    operating_threshold: float,
    iou_threshold: float = 0.5,
) -> PrimaryResult:
    """COCO metrics, PR curves and the confusion matrix at the operating threshold."""
    metrics = coco_metrics(dict(gt), list(records), image_ids=list(image_ids), backend="faster")
    curves = pr_curves(gt, records, image_ids)
    cats = [int(c["id"]) for c in gt["categories"]]
    labels = [str(c["name"]) for c in gt["categories"]]
    cm = confusion_matrix(gt, records, image_ids, cats, operating_threshold, iou_threshold)
    return PrimaryResult(metrics, curves, [*labels, "background/missed"], cm, operating_threshold)


# --------------------------------------------------------------------------- plots


def plot_pr_curves(result: PrimaryResult, title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ap = result.metrics.get("per_class_AP", {})
    drawn = 0
    for k, (name, curves) in enumerate(result.pr_curves.items()):
        color = colors[k % len(colors)]
        if curves["iou50"] is None:
            ax.plot([], [], color=color, label=f"{name}: no ground truth")
            continue
        v = ap.get(name, -1.0)
        ax.plot(RECALL_POINTS, curves["iou50"], color=color, label=f"{name} IoU.5 (AP {100 * v:.1f})")
        if curves["iou75"] is not None:
            ax.plot(RECALL_POINTS, curves["iou75"], color=color, linestyle="--", label=f"{name} IoU.75")
        drawn += 1
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    if drawn == 0:
        ax.text(0.5, 0.5, "no ground truth in these images", ha="center", transform=ax.transAxes)
    return png_bytes(fig)


def plot_confusion(result: PrimaryResult, title: str) -> bytes:
    plt = pyplot()
    cm = result.confusion
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    ax.imshow(np.log1p(cm), cmap="Blues")
    labels = result.confusion_labels
    rows = [*labels[:-1], "background (FP)"]
    cols = [*labels[:-1], "missed (FN)"]
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    vmax = math.log1p(int(cm.max())) if cm.size else 0.0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            dark = vmax > 0 and math.log1p(int(cm[i, j])) > 0.6 * vmax
            ax.text(
                j,
                i,
                str(int(cm[i, j])),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title(f"{title} (score >= {result.operating_threshold:g}, IoU >= .5)", fontsize=9)
    return png_bytes(fig)
