"""Calibration of detection confidences: ECE, D-ECE, Brier score, NLL, reliability diagram,
and a recommended score threshold per class.

Every detection is labelled TP or FP by same-class greedy matching at IoU 0.5
(:mod:`adas.evaluation.matching`); its score is read as the probability of being a TP.

* **ECE**: equal-width confidence bins, ``sum_b n_b / N * |precision_b - mean confidence_b|``.
* **D-ECE** (Kueppers et al. 2020): the same over joint bins of confidence x box width x box
  height, so a detector that is calibrated on average but over-confident on small boxes shows
  it. Width/height edges are the terciles of the *ground-truth* sizes of the evaluated images,
  identical for every model evaluated on them, so candidate and production are comparable.
* **Brier**: ``mean((score - tp)^2)``; **NLL**: Bernoulli negative log-likelihood of TP given
  the score (meaningful here: the sigmoid heatmap is a per-detection probability).
* **Recommended threshold**: per class, the score that maximises F1 (recall counts every
  ground-truth box of the class, so missed objects count against it).

Undefined values (no detections, a class without ground truth) are ``None`` with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adas.evaluation.matching import MatchedDetections
from adas.evaluation.plots import png_bytes, pyplot

_EPS = 1e-6


def _ece(conf: np.ndarray, correct: np.ndarray, bins: int) -> tuple[float | None, list[dict[str, Any]]]:
    if conf.size == 0:
        return None, []
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(conf, edges[1:-1], right=False), 0, bins - 1)
    ece = 0.0
    table = []
    for b in range(bins):
        sel = idx == b
        n = int(sel.sum())
        row: dict[str, Any] = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": n}
        if n:
            mc, prec = float(conf[sel].mean()), float(correct[sel].mean())
            ece += n / conf.size * abs(prec - mc)
            row.update(mean_confidence=mc, precision=prec)
        else:
            row.update(mean_confidence=None, precision=None)
        table.append(row)
    return float(ece), table


def size_edges(
    gt: Mapping[str, Any], image_ids: Sequence[int], parts: int
) -> tuple[list[float], list[float]]:
    """Inner bin edges (terciles for ``parts=3``) of ground-truth width and height relative to the frame."""
    keep = {int(i) for i in image_ids}
    sizes = {int(im["id"]): (float(im.get("width", 1)), float(im.get("height", 1))) for im in gt["images"]}
    ws, hs = [], []
    for a in gt["annotations"]:
        i = int(a["image_id"])
        if i in keep:
            fw, fh = sizes.get(i, (1.0, 1.0))
            ws.append(float(a["bbox"][2]) / fw)
            hs.append(float(a["bbox"][3]) / fh)
    q = np.linspace(0, 1, parts + 1)[1:-1]
    if not ws:
        return [], []
    return np.quantile(ws, q).tolist(), np.quantile(hs, q).tolist()


def _dece(
    conf: np.ndarray,
    correct: np.ndarray,
    width: np.ndarray,
    height: np.ndarray,
    conf_bins: int,
    w_edges: Sequence[float],
    h_edges: Sequence[float],
) -> float | None:
    if conf.size == 0:
        return None
    ci = np.clip(np.digitize(conf, np.linspace(0, 1, conf_bins + 1)[1:-1]), 0, conf_bins - 1)
    wi = np.digitize(width, np.asarray(w_edges)) if len(w_edges) else np.zeros(conf.size, int)
    hi = np.digitize(height, np.asarray(h_edges)) if len(h_edges) else np.zeros(conf.size, int)
    key = (ci * (len(w_edges) + 1) + wi) * (len(h_edges) + 1) + hi
    total = 0.0
    for k in np.unique(key):
        sel = key == k
        total += sel.sum() / conf.size * abs(float(correct[sel].mean()) - float(conf[sel].mean()))
    return float(total)


def calibration_bins(
    matched: MatchedDetections,
    metric: str,
    bins: int,
    dece_bins: Mapping[str, int],
    w_edges: Sequence[float],
    h_edges: Sequence[float],
) -> np.ndarray:
    """Each detection's bin, as :func:`_ece` (``metric="ece"``) or :func:`_dece` bins it."""
    conf = np.clip(matched.scores, 0.0, 1.0)
    if metric == "ece":
        return np.clip(np.digitize(conf, np.linspace(0.0, 1.0, bins + 1)[1:-1]), 0, bins - 1)
    cb = dece_bins["confidence"]
    ci = np.clip(np.digitize(conf, np.linspace(0, 1, cb + 1)[1:-1]), 0, cb - 1)
    wi = np.digitize(matched.width, np.asarray(w_edges)) if len(w_edges) else np.zeros(conf.size, int)
    hi = np.digitize(matched.height, np.asarray(h_edges)) if len(h_edges) else np.zeros(conf.size, int)
    return (ci * (len(w_edges) + 1) + wi) * (len(h_edges) + 1) + hi


def weighted_calibration_error(
    keys: np.ndarray, conf: np.ndarray, correct: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """ECE / D-ECE per row of detection weights ``[R, D]``: sum over bins of |sum w (correct -
    conf)| / sum w, which is sum_b n_b / N |precision_b - confidence_b| at unit weights."""
    weights = np.atleast_2d(weights)
    if conf.size == 0:
        return np.full(weights.shape[0], np.nan)
    _, bin_of = np.unique(keys, return_inverse=True)
    residual = np.zeros((conf.size, int(bin_of.max()) + 1))
    residual[np.arange(conf.size), bin_of] = np.asarray(correct, np.float64) - np.clip(conf, 0.0, 1.0)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, np.abs(weights @ residual).sum(axis=1) / total, np.nan)


def best_f1_threshold(scores: np.ndarray, tp: np.ndarray, num_gt: int) -> dict[str, Any]:
    """The score threshold maximising F1 for one class (``None`` when undefined, with a reason)."""
    if num_gt == 0:
        return {"threshold": None, "reason": "no ground truth for this class in the evaluated images"}
    if scores.size == 0:
        return {"threshold": None, "reason": "no detections of this class", "f1": 0.0, "recall": 0.0}
    order = np.argsort(-scores, kind="stable")
    s, t = scores[order], tp[order].astype(np.float64)
    cum_tp = np.cumsum(t)
    k = np.arange(1, s.size + 1)
    precision = cum_tp / k
    recall = cum_tp / num_gt
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, _EPS), 0.0)
    # Equal scores form one decision: only the last index of a run of ties is a valid cut.
    valid = np.r_[s[1:] < s[:-1], True]
    f1v = np.where(valid, f1, -1.0)
    j = int(np.argmax(f1v))
    if f1v[j] <= 0:
        return {"threshold": None, "reason": "no true positive at any threshold", "f1": 0.0, "recall": 0.0}
    return {
        "threshold": float(s[j]),
        "f1": float(f1[j]),
        "precision": float(precision[j]),
        "recall": float(recall[j]),
    }


def _f1_at(scores: np.ndarray, tp: np.ndarray, num_gt: int, threshold: float) -> float | None:
    if num_gt == 0:
        return None
    sel = scores >= threshold
    n_tp = float(tp[sel].sum())
    p = n_tp / sel.sum() if sel.any() else 0.0
    r = n_tp / num_gt
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def calibration_report(
    matched: MatchedDetections,
    class_names: Mapping[int, str],
    *,
    bins: int = 10,
    dece_bins: Mapping[str, int] | None = None,
    w_edges: Sequence[float] = (),
    h_edges: Sequence[float] = (),
    operating_threshold: float | None = None,
    min_detections_for_threshold: int = 5,
) -> dict[str, Any]:
    """ECE, D-ECE, Brier, NLL, reliability bins and per-class thresholds of matched detections."""
    dece_bins = dict(dece_bins or {"confidence": 5, "width": 3, "height": 3})
    conf = np.clip(matched.scores, 0.0, 1.0)
    tp = matched.tp.astype(np.float64)
    ece, reliability = _ece(conf, tp, bins)
    p = np.clip(conf, _EPS, 1 - _EPS)
    out: dict[str, Any] = {
        "detections": len(matched),
        "true_positives": int(tp.sum()),
        "ece": ece,
        "dece": _dece(conf, tp, matched.width, matched.height, dece_bins["confidence"], w_edges, h_edges),
        "brier": float(np.mean((conf - tp) ** 2)) if conf.size else None,
        "nll": float(np.mean(-(tp * np.log(p) + (1 - tp) * np.log(1 - p)))) if conf.size else None,
        "reliability": reliability,
        "dece_bins": {**dece_bins, "width_edges": list(w_edges), "height_edges": list(h_edges)},
        "per_class": {},
    }
    if conf.size == 0:
        out["note"] = "no detections: calibration is undefined (reported as null)"
    for cid, name in class_names.items():
        sel = matched.category_ids == cid
        n_gt = int(matched.gt_per_class.get(cid, 0))
        c_ece, _ = _ece(conf[sel], tp[sel], bins)
        rec = best_f1_threshold(conf[sel], tp[sel], n_gt)
        if rec.get("threshold") is not None and int(sel.sum()) < min_detections_for_threshold:
            rec = {
                "threshold": None,
                "reason": f"only {int(sel.sum())} detections: too few to tune a threshold",
            }
        entry: dict[str, Any] = {
            "ground_truth": n_gt,
            "detections": int(sel.sum()),
            "ece": c_ece,
            "brier": float(np.mean((conf[sel] - tp[sel]) ** 2)) if sel.any() else None,
            "recommended_threshold": rec,
        }
        if operating_threshold is not None:
            entry["f1_at_operating_threshold"] = _f1_at(conf[sel], tp[sel], n_gt, operating_threshold)
        out["per_class"][name] = entry
    return out


def plot_reliability(report: Mapping[str, Any], title: str) -> bytes:
    """Reliability diagram (precision vs confidence per bin, bar width = bin) with counts."""
    plt = pyplot()
    fig, (ax, axc) = plt.subplots(
        2, 1, figsize=(5.2, 5.0), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    bins = report.get("reliability") or []
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect calibration")
    los = [b["lo"] for b in bins if b["count"]]
    widths = [b["hi"] - b["lo"] for b in bins if b["count"]]
    precs = [b["precision"] for b in bins if b["count"]]
    confs = [b["mean_confidence"] for b in bins if b["count"]]
    ax.bar(los, precs, width=widths, align="edge", alpha=0.7, edgecolor="black", label="precision (TP rate)")
    ax.scatter(confs, precs, color="black", s=10, zorder=3)
    ece, dece = report.get("ece"), report.get("dece")
    label = "n/a" if ece is None else f"{100 * ece:.1f}"
    dlabel = "n/a" if dece is None else f"{100 * dece:.1f}"
    ax.set_title(f"{title}\nECE {label} pts, D-ECE {dlabel} pts", fontsize=9)
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="upper left")
    axc.bar(
        [b["lo"] for b in bins],
        [b["count"] for b in bins],
        width=[b["hi"] - b["lo"] for b in bins],
        align="edge",
        color="grey",
    )
    axc.set_yscale("symlog")
    axc.set_xlabel("confidence")
    axc.set_ylabel("detections")
    axc.set_xlim(0, 1)
    if not bins:
        ax.text(0.5, 0.5, "no detections", ha="center", transform=ax.transAxes)
    return png_bytes(fig)
