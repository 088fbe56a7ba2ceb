"""Prediction drift, candidate vs production, with Evidently (on the same frames).

Two tables per model, both handed to Evidently's ``DataDriftPreset`` (production = reference,
candidate = current):

* per detection: score, class, box width / height / centre (relative to the frame);
* per frame: number of detections, confident detections, max score, mean score.

Evidently picks a test per column (Wasserstein / Jensen-Shannon by default at these sizes) and
flags drift per column; the two HTML reports are stored and linked, the summary goes to metadata.
Evidently (~10 s to import) and pandas (~1 s, needed only for Evidently's tables) are imported
inside the functions: this module is imported with the code location, which never runs them.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from adas.evaluation.runner import Predictions

DETECTION_COLUMNS = ("score", "class", "width", "height", "center_x", "center_y")
FRAME_COLUMNS = ("detections", "confident_detections", "max_score", "mean_score")


def prediction_tables(
    preds: Predictions,
    class_names: Mapping[int, str],
    size_hw: tuple[int, int],
    operating_threshold: float,
) -> tuple[Any, Any]:
    """(per-detection, per-frame) pandas frames of one model's predictions."""
    import pandas as pd

    h, w = size_hw
    det_rows: dict[str, list[Any]] = {c: [] for c in DETECTION_COLUMNS}
    frame_rows: dict[str, list[Any]] = {c: [] for c in FRAME_COLUMNS}
    for d in preds.detections:
        b = d.boxes.astype(np.float64)
        det_rows["score"].extend(d.scores.astype(float).tolist())
        det_rows["class"].extend(class_names.get(int(c), str(int(c))) for c in d.category_ids)
        det_rows["width"].extend(((b[:, 2] - b[:, 0]) / w).tolist())
        det_rows["height"].extend(((b[:, 3] - b[:, 1]) / h).tolist())
        det_rows["center_x"].extend(((b[:, 0] + b[:, 2]) / 2 / w).tolist())
        det_rows["center_y"].extend(((b[:, 1] + b[:, 3]) / 2 / h).tolist())
        frame_rows["detections"].append(len(d))
        frame_rows["confident_detections"].append(int((d.scores >= operating_threshold).sum()))
        frame_rows["max_score"].append(float(d.scores.max()) if len(d) else 0.0)
        frame_rows["mean_score"].append(float(d.scores.mean()) if len(d) else 0.0)
    dets = pd.DataFrame(det_rows)
    dets["class"] = dets["class"].astype("object")
    return dets, pd.DataFrame(frame_rows)


def _summarize(snapshot: Any) -> dict[str, Any]:
    body = snapshot.dict()
    columns: dict[str, Any] = {}
    count: dict[str, Any] = {}
    for m in body.get("metrics", []):
        cfg = m.get("config", {})
        kind = cfg.get("type", "")
        if kind.endswith("DriftedColumnsCount"):
            count = {"drifted_columns": int(m["value"]["count"]), "share": float(m["value"]["share"])}
        elif kind.endswith("ValueDrift"):
            value = float(m["value"])
            threshold = float(cfg.get("threshold") or 0.1)
            method = str(cfg.get("method", ""))
            entry: dict[str, Any] = {"method": method, "value": value, "threshold": threshold}
            if not math.isfinite(value):
                # e.g. a chi-square test on a constant column: no statistic, so no drift call.
                entry.update(value=None, drifted=False, note="test statistic undefined (constant column?)")
            else:
                # p-value tests drift when the value is *below* the threshold, distances when above.
                entry["drifted"] = bool(
                    value < threshold if "p_value" in method.lower() else value >= threshold
                )
            columns[str(cfg.get("column"))] = entry
    return {**count, "columns": columns}


def drift_report(
    candidate: Predictions,
    production: Predictions,
    class_names: Mapping[int, str],
    size_hw: tuple[int, int],
    operating_threshold: float,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Evidently HTML reports (``per_frame``, ``per_detection``) and a summary, candidate vs production."""
    from evidently import Report
    from evidently.presets import DataDriftPreset

    prod_ids = set(production.image_ids)
    shared = [i for i in candidate.image_ids if i in prod_ids]
    cand, prod = candidate.subset(shared), production.subset(shared)
    c_det, c_frame = prediction_tables(cand, class_names, size_hw, operating_threshold)
    p_det, p_frame = prediction_tables(prod, class_names, size_hw, operating_threshold)
    summary: dict[str, Any] = {
        "frames": len(shared),
        "reference": "production",
        "current": "candidate",
        "candidate_detections": len(c_det),
        "production_detections": len(p_det),
        "candidate_mean_detections_per_frame": float(c_frame["detections"].mean()) if len(c_frame) else None,
        "production_mean_detections_per_frame": float(p_frame["detections"].mean()) if len(p_frame) else None,
        "candidate_mean_score": float(c_det["score"].mean()) if len(c_det) else None,
        "production_mean_score": float(p_det["score"].mean()) if len(p_det) else None,
    }
    html: dict[str, bytes] = {}
    for name, cur, ref in (("per_frame", c_frame, p_frame), ("per_detection", c_det, p_det)):
        if len(cur) < 2 or len(ref) < 2:
            summary[name] = {"skipped": f"too few rows (candidate {len(cur)}, production {len(ref)})"}
            continue
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            # scipy's chi-square warns on categories absent from one side; the summary handles it.
            warnings.simplefilter("ignore", RuntimeWarning)
            snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        summary[name] = _summarize(snapshot)
        html[name] = _snapshot_html(snapshot, name)
    summary["drifted"] = [
        f"{table}.{col}"
        for table in ("per_frame", "per_detection")
        for col, r in summary.get(table, {}).get("columns", {}).items()
        if r["drifted"]
    ]
    return html, summary


def _snapshot_html(snapshot: Any, name: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="drift-") as tmp:
        path = Path(tmp) / f"{name}.html"
        snapshot.save_html(str(path))
        return path.read_bytes()
