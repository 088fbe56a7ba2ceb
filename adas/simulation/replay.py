"""Open-loop replay: recorded drive sequences through candidate and production, against ground truth.

For every sequence of ``replay_sequences.json`` (consecutive frames at a fixed fps, ground
truth with track ids, the ego flagged ``is_ego``):

* per frame: true positives, misses and false positives (greedy IoU matching, class-agnostic,
  ego excluded on both sides: the ego's own box is neither a miss nor a false positive);
* per segment (``segment_frames`` consecutive frames): recall, precision, false positives
  per frame;
* time to first detection of every ground-truth object (from its first appearance; ``None``
  when never detected), per class;
* a simple IoU tracker on the detections, scored against the ground-truth tracks:
  fragmentations (a tracked object lost and found again), identity switches (the object's
  track id changes), ghost tracks (tracks of several frames that never overlap any object);
* divergence: segments where candidate and production differ materially (recall or false
  positives) are flagged for review, together with the candidate's worst segments; a flagged
  segment carries the ground-truth tracks in metres relative to the ego, which is what
  ``scenarios`` turns into OpenSCENARIO.

The result types live in ``replay_report``; box matching and the tracker are the shared ones
of ``adas.detector.tracking`` (the robustness suite's temporal stress uses the same).

Domain code: no dagster import.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from adas.datasets.coco import CATEGORY_IDS
from adas.detector.postprocess import Detections, box_iou
from adas.detector.tracking import IouTracker, match_boxes
from adas.simulation.config import ReplayConfig
from adas.simulation.replay_report import (
    FlaggedSegment,
    FlaggedTrack,
    FrameEval,
    ModelReplay,
    ObjectEval,
    ReplayReport,
    SegmentEval,
    SequenceEval,
    TrackPoint,
)

CLASS_NAMES: dict[int, str] = {v: k for k, v in CATEGORY_IDS.items()}


def _xywh_to_xyxy(b: Sequence[float]) -> tuple[float, float, float, float]:
    x, y, w, h = b
    return (x, y, x + w, y + h)


# ==================================================================================================
# Per-model evaluation


def _index(coco: Mapping[str, Any]) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    images = {im["id"]: im for im in coco["images"]}
    anns: dict[int, list[dict]] = defaultdict(list)
    for a in coco["annotations"]:
        anns[a["image_id"]].append(a)
    return images, anns


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def evaluate_model(
    coco: Mapping[str, Any], detections: Mapping[int, Detections], cfg: ReplayConfig, model: str
) -> ModelReplay:
    """Frame, segment, object and track metrics of one model over every replay sequence."""
    _, anns = _index(coco)
    frames: list[FrameEval] = []
    segments: list[SegmentEval] = []
    objects: list[ObjectEval] = []
    sequences: list[SequenceEval] = []
    for seq in coco["sequences"]:
        sid = seq["sequence_id"]
        fps = float(seq["fps"])
        tracker = IouTracker(cfg.tracker_iou, cfg.tracker_max_age)
        # per GT track: list of (frame, matched predicted track id or None)
        gt_hist: dict[int, list[tuple[int, int | None]]] = defaultdict(list)
        gt_class: dict[int, int] = {}
        pred_hits: dict[int, list[bool]] = defaultdict(list)
        seq_frames: list[FrameEval] = []
        for k, image_id in enumerate(seq["image_ids"]):
            gts = [a for a in anns[image_id] if not a.get("is_ego")]
            ego = [a for a in anns[image_id] if a.get("is_ego")]
            det = detections.get(image_id, Detections.empty())
            boxes = det.boxes
            if ego and len(boxes):
                ego_iou = box_iou(np.asarray([_xywh_to_xyxy(ego[0]["bbox"])]), boxes)[0]
                boxes = boxes[ego_iou < 0.3]
            track_ids = tracker.update(boxes).tolist()
            gt_boxes = np.asarray([_xywh_to_xyxy(a["bbox"]) for a in gts]).reshape(-1, 4)
            matches = match_boxes(gt_boxes, boxes, cfg.match_iou)
            matched_g = {g: d for g, d in matches}
            matched_d = {d for _, d in matches}
            for gi, a in enumerate(gts):
                tid = a["track_id"]
                gt_class[tid] = a["category_id"]
                d = matched_g.get(gi)
                gt_hist[tid].append((k, track_ids[d] if d is not None else None))
            for di, tid in enumerate(track_ids):
                pred_hits[tid].append(di in matched_d)
            fe = FrameEval(
                sequence_id=sid,
                image_id=image_id,
                frame_index=k,
                t_s=round(k / fps, 4),
                n_gt=len(gts),
                tp=len(matches),
                fn=len(gts) - len(matches),
                fp=len(boxes) - len(matches),
            )
            seq_frames.append(fe)
        frames.extend(seq_frames)
        n = len(seq_frames)
        for si, start in enumerate(range(0, n, cfg.segment_frames)):
            chunk = seq_frames[start : start + cfg.segment_frames]
            tp = sum(f.tp for f in chunk)
            n_gt = sum(f.n_gt for f in chunk)
            fp = sum(f.fp for f in chunk)
            segments.append(
                SegmentEval(
                    sequence_id=sid,
                    segment=si,
                    start_frame=start,
                    end_frame=start + len(chunk) - 1,
                    n_gt=n_gt,
                    tp=tp,
                    fp=fp,
                    recall=_ratio(tp, n_gt),
                    precision=_ratio(tp, tp + fp),
                    fp_per_frame=round(fp / len(chunk), 4),
                )
            )
        seq_objects = []
        for tid, hist in sorted(gt_hist.items()):
            first = hist[0][0]
            detected = [f for f, p in hist if p is not None]
            frag = 0
            idsw = 0
            prev_matched = False
            last_id: int | None = None
            ever = False
            for _, p in hist:
                if p is not None:
                    if ever and not prev_matched:
                        frag += 1
                    if last_id is not None and p != last_id:
                        idsw += 1
                    last_id = p
                    ever = True
                prev_matched = p is not None
            seq_objects.append(
                ObjectEval(
                    sequence_id=sid,
                    gt_track=tid,
                    category=CLASS_NAMES.get(gt_class[tid], str(gt_class[tid])),
                    first_seen_s=round(first / fps, 4),
                    frames=len(hist),
                    detected_frames=len(detected),
                    time_to_first_detection_s=round((detected[0] - first) / fps, 4) if detected else None,
                    fragmentations=frag,
                    id_switches=idsw,
                )
            )
        objects.extend(seq_objects)
        ghosts = sum(
            1 for hits in pred_hits.values() if len(hits) >= cfg.min_ghost_track_frames and not any(hits)
        )
        tp = sum(f.tp for f in seq_frames)
        n_gt = sum(f.n_gt for f in seq_frames)
        fp = sum(f.fp for f in seq_frames)
        ttfd = [o.time_to_first_detection_s for o in seq_objects if o.time_to_first_detection_s is not None]
        sequences.append(
            SequenceEval(
                sequence_id=sid,
                scenario=seq.get("scenario", ""),
                weather=seq.get("weather", ""),
                lighting=seq.get("lighting", ""),
                frames=n,
                n_gt=n_gt,
                recall=_ratio(tp, n_gt),
                precision=_ratio(tp, tp + fp),
                fp_per_frame=round(fp / max(n, 1), 4),
                mean_ttfd_s=round(float(np.mean(ttfd)), 4) if ttfd else None,
                never_detected=sum(o.time_to_first_detection_s is None for o in seq_objects),
                fragmentations=sum(o.fragmentations for o in seq_objects),
                id_switches=sum(o.id_switches for o in seq_objects),
                ghost_tracks=ghosts,
                tracks=len(pred_hits),
            )
        )
    return ModelReplay(model=model, sequences=sequences, segments=segments, objects=objects, frames=frames)


# ==================================================================================================
# Divergence and flagged segments


def _track_points(
    anns: Sequence[dict], ego: dict | None, frame: int, fps: float, px_per_m: float
) -> dict[int, TrackPoint]:
    out: dict[int, TrackPoint] = {}
    if ego is None:
        return out
    ex, ey, ew, eh = ego["bbox"]
    ecx, ecy = ex + ew / 2, ey + eh / 2
    for a in anns:
        x, y, w, h = a["bbox"]
        out[a["track_id"]] = TrackPoint(
            frame=frame,
            t_s=round(frame / fps, 4),
            x_m=round((x + w / 2 - ecx) / px_per_m, 3),
            y_m=round((y + h / 2 - ecy) / px_per_m, 3),
            length_m=round(w / px_per_m, 3),
            width_m=round(h / px_per_m, 3),
        )
    return out


def flag_segments(
    coco: Mapping[str, Any],
    candidate: ModelReplay,
    production: ModelReplay,
    cand_dets: Mapping[int, Detections],
    prod_dets: Mapping[int, Detections],
    cfg: ReplayConfig,
    px_per_m: float,
) -> list[FlaggedSegment]:
    """Segments where candidate and production diverge, plus the candidate's worst segments."""
    images, anns = _index(coco)
    seqs = {s["sequence_id"]: s for s in coco["sequences"]}
    prod_seg = {(s.sequence_id, s.segment): s for s in production.segments}
    reasons: dict[tuple[str, int], list[str]] = defaultdict(list)
    judged = []
    for c in candidate.segments:
        p = prod_seg.get((c.sequence_id, c.segment))
        if p is None or c.n_gt < cfg.min_gt_per_segment:
            continue
        judged.append(c)
        key = (c.sequence_id, c.segment)
        if c.recall is not None and p.recall is not None:
            if c.recall <= p.recall - cfg.divergence_recall_delta:
                reasons[key].append(f"candidate recall {c.recall:.2f} < production {p.recall:.2f}")
            elif c.recall >= p.recall + cfg.divergence_recall_delta:
                reasons[key].append(f"candidate recall {c.recall:.2f} > production {p.recall:.2f}")
        if c.fp_per_frame >= p.fp_per_frame + cfg.divergence_fp_per_frame_delta:
            reasons[key].append(
                f"candidate {c.fp_per_frame:.1f} false positives/frame vs production {p.fp_per_frame:.1f}"
            )
        elif p.fp_per_frame >= c.fp_per_frame + cfg.divergence_fp_per_frame_delta:
            reasons[key].append(
                f"production {p.fp_per_frame:.1f} false positives/frame vs candidate {c.fp_per_frame:.1f}"
            )
    worst = sorted(
        judged, key=lambda s: (s.recall if s.recall is not None else 1.0, s.sequence_id, s.segment)
    )
    for c in worst[: cfg.worst_segments]:
        reasons[(c.sequence_id, c.segment)].append(
            f"among the candidate's {cfg.worst_segments} worst segments (recall {c.recall})"
        )
    cand_seg = {(s.sequence_id, s.segment): s for s in candidate.segments}
    flagged: list[FlaggedSegment] = []
    for (sid, si), why in reasons.items():
        c, p = cand_seg[(sid, si)], prod_seg[(sid, si)]
        seq = seqs[sid]
        fps = float(seq["fps"])
        ids = seq["image_ids"][c.start_frame : c.end_frame + 1]
        ego_pts: list[TrackPoint] = []
        tracks: dict[int, list[TrackPoint]] = defaultdict(list)
        cls: dict[int, int] = {}
        missed_c: dict[int, int] = defaultdict(int)
        missed_p: dict[int, int] = defaultdict(int)
        severity = 0
        for offset, image_id in enumerate(ids):
            frame = c.start_frame + offset
            severity = int(images[image_id].get("severity", 0) or 0)
            ego = next((a for a in anns[image_id] if a.get("is_ego")), None)
            gts = [a for a in anns[image_id] if not a.get("is_ego")]
            pts = _track_points(gts, ego, frame, fps, px_per_m)
            if ego is not None:
                ego_pts.append(_track_points([ego], ego, frame, fps, px_per_m)[ego["track_id"]])
            gt_boxes = np.asarray([_xywh_to_xyxy(a["bbox"]) for a in gts]).reshape(-1, 4)
            for dets, missed in ((cand_dets, missed_c), (prod_dets, missed_p)):
                d = dets.get(image_id, Detections.empty())
                hit = {g for g, _ in match_boxes(gt_boxes, d.boxes, cfg.match_iou)}
                for gi, a in enumerate(gts):
                    if gi not in hit:
                        missed[a["track_id"]] += 1
            for a in gts:
                cls[a["track_id"]] = a["category_id"]
                if a["track_id"] in pts:
                    tracks[a["track_id"]].append(pts[a["track_id"]])
        flagged.append(
            FlaggedSegment(
                segment_id=f"{sid}-seg{si:02d}",
                sequence_id=sid,
                scenario=seq.get("scenario", ""),
                weather=seq.get("weather", "clear"),
                lighting=seq.get("lighting", "day"),
                severity=severity,
                start_frame=c.start_frame,
                end_frame=c.end_frame,
                start_s=round(c.start_frame / fps, 4),
                end_s=round(c.end_frame / fps, 4),
                fps=fps,
                reasons=why,
                candidate_recall=c.recall,
                production_recall=p.recall,
                candidate_fp_per_frame=c.fp_per_frame,
                production_fp_per_frame=p.fp_per_frame,
                ego_points=ego_pts,
                tracks=[
                    FlaggedTrack(
                        gt_track=tid,
                        category=CLASS_NAMES.get(cls[tid], "car"),
                        points=pts,
                        missed_by_candidate=missed_c[tid],
                        missed_by_production=missed_p[tid],
                    )
                    for tid, pts in sorted(tracks.items())
                ],
            )
        )
    flagged.sort(key=lambda f: (-f.score, f.segment_id))
    return flagged[: cfg.max_flagged]


# ==================================================================================================
# Driving the engines over the recorded frames


def detect_frames(
    coco: Mapping[str, Any],
    load_frame: Callable[[dict], np.ndarray],
    detect: Callable[[np.ndarray], Detections],
) -> dict[int, Detections]:
    """Detections for every image of every sequence (frames in recording order)."""
    images = {im["id"]: im for im in coco["images"]}
    out: dict[int, Detections] = {}
    for seq in coco["sequences"]:
        for image_id in seq["image_ids"]:
            out[image_id] = detect(load_frame(images[image_id]))
    return out


def replay(
    coco: Mapping[str, Any],
    cand_dets: Mapping[int, Detections],
    prod_dets: Mapping[int, Detections],
    cfg: ReplayConfig,
    px_per_m: float,
    names: tuple[str, str] = ("candidate", "production"),
) -> ReplayReport:
    cand = evaluate_model(coco, cand_dets, cfg, names[0])
    prod = evaluate_model(coco, prod_dets, cfg, names[1])
    flagged = flag_segments(coco, cand, prod, cand_dets, prod_dets, cfg, px_per_m)
    return ReplayReport(candidate=cand, production=prod, flagged=flagged)
