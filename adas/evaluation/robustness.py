"""Temporal stress on replay sequences: dropped frames, timestamp jitter, out-of-order batches
and a blanked segment, measured as the continuity of a constant-velocity IoU tracker against
the ground-truth track ids.

The other robustness studies live beside it: image corruptions x severities in
:mod:`adas.evaluation.corruptions`, sensor faults in :mod:`adas.evaluation.sensor_faults`.

Domain code: no Dagster import.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adas.detector.postprocess import Detections
from adas.detector.tracking import IouTracker, match_boxes

# --------------------------------------------------------------------------- temporal stress


def _gt_frames(
    replay: Mapping[str, Any], image_ids: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    keep = set(int(i) for i in image_ids)
    boxes: dict[int, list[list[float]]] = {i: [] for i in keep}
    tracks: dict[int, list[int]] = {i: [] for i in keep}
    for a in replay["annotations"]:
        i = int(a["image_id"])
        if i in keep:
            x, y, w, h = a["bbox"]
            boxes[i].append([x, y, x + w, y + h])
            tracks[i].append(int(a.get("track_id", -1)))
    return {
        i: (np.asarray(boxes[i], np.float64).reshape(-1, 4), np.asarray(tracks[i], np.int64)) for i in keep
    }


def _continuity(
    order: Sequence[int],
    assigned: Mapping[int, tuple[np.ndarray, np.ndarray]],
    gt: Mapping[int, tuple[np.ndarray, np.ndarray]],
) -> dict[str, int]:
    """Pairs of consecutive observations (in time ``order``) of one ground-truth track: how many
    keep one tracker id (continuous), switch id, or lose the object in either frame."""
    last: dict[int, int | None] = {}
    counts = {"pairs": 0, "continuous": 0, "id_switches": 0, "lost": 0, "observations": 0, "matched": 0}
    for i in order:
        gb, gtid = gt[i]
        pb, pid = assigned.get(i, (np.zeros((0, 4)), np.zeros(0, np.int64)))
        match = {g: int(pid[d]) for g, d in match_boxes(gb, pb, 0.5)}
        for k, g in enumerate(gtid.tolist()):
            counts["observations"] += 1
            now = match.get(k)
            if now is not None:
                counts["matched"] += 1
            if g in last:
                counts["pairs"] += 1
                prev = last[g]
                if prev is None or now is None:
                    counts["lost"] += 1
                elif prev == now:
                    counts["continuous"] += 1
                else:
                    counts["id_switches"] += 1
            last[g] = now
    return counts


def _track_sequence(
    arrival: Sequence[int],
    timestamps: Mapping[int, float],
    dets: Mapping[int, Detections],
    operating_threshold: float,
    iou: float,
    max_age: int,
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    tracker = IouTracker(iou, max_age)
    out = {}
    for i in arrival:
        d = dets[i]
        keep = d.scores >= operating_threshold
        boxes = d.boxes[keep]
        out[i] = (boxes.astype(np.float64), tracker.update(boxes, timestamps[i]))
    return out


def temporal_stress(
    replay: Mapping[str, Any],
    detections: Mapping[int, Detections],
    operating_threshold: float,
    *,
    drop_probability: float = 0.3,
    jitter_std_s: float = 0.08,
    out_of_order_batch: int = 4,
    tracker_iou: float = 0.3,
    tracker_max_age: int = 2,
    min_continuity_ratio: float = 0.8,
    blank_detections: Detections | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Tracker continuity on every replay sequence under each stress, vs the nominal stream."""
    rng = np.random.default_rng(seed)
    times = {int(im["id"]): float(im.get("timestamp_s", 0.0)) for im in replay["images"]}
    conditions = ("nominal", "dropped_frames", "timestamp_jitter", "out_of_order", "blanked_segment")
    totals = {
        c: {"pairs": 0, "continuous": 0, "id_switches": 0, "lost": 0, "observations": 0, "matched": 0}
        for c in conditions
    }
    blank = blank_detections if blank_detections is not None else Detections.empty()
    ghost = 0
    sequences = replay.get("sequences", [])
    for seq in sequences:
        ids = [int(i) for i in seq["image_ids"] if int(i) in detections]
        if len(ids) < 2:
            continue
        gt = _gt_frames(replay, ids)
        runs: dict[str, tuple[list[int], dict[int, float], dict[int, Detections], list[int]]] = {}
        runs["nominal"] = (ids, times, dict(detections), ids)
        kept = [i for k, i in enumerate(ids) if k == 0 or rng.random() >= drop_probability]
        runs["dropped_frames"] = (kept, times, dict(detections), kept)
        jittered = {i: times[i] + float(rng.normal(0, jitter_std_s)) for i in ids}
        runs["timestamp_jitter"] = (ids, jittered, dict(detections), ids)
        arrival: list[int] = []
        for s in range(0, len(ids), out_of_order_batch):
            batch = ids[s : s + out_of_order_batch]
            arrival.extend(batch[k] for k in rng.permutation(len(batch)))
        runs["out_of_order"] = (arrival, times, dict(detections), ids)
        n = len(ids)
        seg = set(ids[n // 3 : n // 3 + max(1, n // 5)])
        blanked = {i: (blank if i in seg else detections[i]) for i in ids}
        ghost += sum(int((blank.scores >= operating_threshold).sum()) for _ in seg)
        runs["blanked_segment"] = (ids, times, blanked, [i for i in ids if i not in seg])
        for cond, (arr, ts, dets, measured) in runs.items():
            assigned = _track_sequence(arr, ts, dets, operating_threshold, tracker_iou, tracker_max_age)
            c = _continuity(measured, assigned, gt)
            for k, v in c.items():
                totals[cond][k] += v
    out: dict[str, Any] = {
        "sequences": len(sequences),
        "tracker": {"type": "constant-velocity IoU", "iou": tracker_iou, "max_age": tracker_max_age},
        "operating_threshold": operating_threshold,
        "conditions": {},
    }
    nominal = totals["nominal"]
    nom_cont = nominal["continuous"] / nominal["pairs"] if nominal["pairs"] else None
    for cond, t in totals.items():
        cont = t["continuous"] / t["pairs"] if t["pairs"] else None
        ratio = None if cont is None or not nom_cont else cont / nom_cont
        out["conditions"][cond] = {
            **t,
            "continuity": cont,
            "coverage": t["matched"] / t["observations"] if t["observations"] else None,
            "continuity_vs_nominal": ratio,
            "stable": None if ratio is None else ratio >= min_continuity_ratio,
        }
    out["ghost_detections_in_blanked_segment"] = ghost
    unstable = [c for c, r in out["conditions"].items() if r["stable"] is False]
    out["unstable_conditions"] = unstable
    if not nom_cont:
        out["note"] = (
            "no object kept its track id between consecutive frames even on the nominal stream: "
            "continuity ratios under stress are undefined"
        )
    return out
