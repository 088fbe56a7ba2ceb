"""What open-loop replay reports: per-frame, segment, object and sequence evaluations of each
model, and the segments flagged for review (with the ground-truth tracks ``scenarios`` turns
into OpenSCENARIO). Plain data (pydantic, frozen). Domain code: no dagster import.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FrameEval(_Frozen):
    sequence_id: str
    image_id: int
    frame_index: int
    t_s: float
    n_gt: int
    tp: int
    fn: int
    fp: int


class SegmentEval(_Frozen):
    sequence_id: str
    segment: int
    start_frame: int
    end_frame: int  # inclusive
    n_gt: int
    tp: int
    fp: int
    recall: float | None
    precision: float | None
    fp_per_frame: float


class ObjectEval(_Frozen):
    sequence_id: str
    gt_track: int
    category: str
    first_seen_s: float
    frames: int
    detected_frames: int
    time_to_first_detection_s: float | None
    fragmentations: int
    id_switches: int


class SequenceEval(_Frozen):
    sequence_id: str
    scenario: str
    weather: str
    lighting: str
    frames: int
    n_gt: int
    recall: float | None
    precision: float | None
    fp_per_frame: float
    mean_ttfd_s: float | None
    never_detected: int
    fragmentations: int
    id_switches: int
    ghost_tracks: int
    tracks: int


class ModelReplay(_Frozen):
    model: str
    sequences: list[SequenceEval]
    segments: list[SegmentEval]
    objects: list[ObjectEval]
    frames: list[FrameEval]

    def totals(self) -> dict[str, Any]:
        tp = sum(f.tp for f in self.frames)
        fn = sum(f.fn for f in self.frames)
        fp = sum(f.fp for f in self.frames)
        ttfd = [o.time_to_first_detection_s for o in self.objects if o.time_to_first_detection_s is not None]
        return {
            "model": self.model,
            "frames": len(self.frames),
            "recall": round(tp / (tp + fn), 4) if tp + fn else None,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "fp_per_frame": round(fp / max(len(self.frames), 1), 4),
            "objects": len(self.objects),
            "never_detected": sum(o.time_to_first_detection_s is None for o in self.objects),
            "mean_ttfd_s": round(float(np.mean(ttfd)), 4) if ttfd else None,
            "fragmentations": sum(s.fragmentations for s in self.sequences),
            "id_switches": sum(s.id_switches for s in self.sequences),
            "ghost_tracks": sum(s.ghost_tracks for s in self.sequences),
        }

    def per_class_ttfd(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for cls in sorted({o.category for o in self.objects}):
            objs = [o for o in self.objects if o.category == cls]
            t = [o.time_to_first_detection_s for o in objs if o.time_to_first_detection_s is not None]
            out[cls] = {
                "objects": len(objs),
                "never_detected": len(objs) - len(t),
                "mean_ttfd_s": round(float(np.mean(t)), 4) if t else None,
                "p90_ttfd_s": round(float(np.percentile(t, 90)), 4) if t else None,
            }
        return out


class TrackPoint(_Frozen):
    frame: int
    t_s: float
    x_m: float  # relative to the ego centre, metres; +x right in the frame
    y_m: float  # +y down in the frame (world y in the simulator)
    length_m: float  # box extent along x
    width_m: float  # box extent along y


class FlaggedTrack(_Frozen):
    gt_track: int
    category: str
    points: list[TrackPoint]
    missed_by_candidate: int
    missed_by_production: int


class FlaggedSegment(_Frozen):
    segment_id: str
    sequence_id: str
    scenario: str
    weather: str
    lighting: str
    severity: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    fps: float
    reasons: list[str]
    candidate_recall: float | None
    production_recall: float | None
    candidate_fp_per_frame: float
    production_fp_per_frame: float
    ego_points: list[TrackPoint]
    tracks: list[FlaggedTrack]

    @property
    def score(self) -> float:
        c = self.candidate_recall if self.candidate_recall is not None else 1.0
        p = self.production_recall if self.production_recall is not None else 1.0
        return (p - c) + 0.1 * (self.candidate_fp_per_frame - self.production_fp_per_frame) + (1 - c)


class ReplayReport(_Frozen):
    candidate: ModelReplay
    production: ModelReplay
    flagged: list[FlaggedSegment]

    def sequence_table(self) -> list[dict[str, Any]]:
        prod = {s.sequence_id: s for s in self.production.sequences}
        rows = []
        for c in self.candidate.sequences:
            p = prod[c.sequence_id]
            rows.append(
                {
                    "sequence": c.sequence_id,
                    "condition": f"{c.weather}/{c.lighting}",
                    "recall_cand": c.recall if c.recall is not None else math.nan,
                    "recall_prod": p.recall if p.recall is not None else math.nan,
                    "fp_per_frame_cand": c.fp_per_frame,
                    "fp_per_frame_prod": p.fp_per_frame,
                    "ttfd_s_cand": c.mean_ttfd_s if c.mean_ttfd_s is not None else math.nan,
                    "ttfd_s_prod": p.mean_ttfd_s if p.mean_ttfd_s is not None else math.nan,
                    "never_detected_cand": c.never_detected,
                    "never_detected_prod": p.never_detected,
                    "frag_cand": c.fragmentations,
                    "idsw_cand": c.id_switches,
                    "ghosts_cand": c.ghost_tracks,
                    "ghosts_prod": p.ghost_tracks,
                }
            )
        return rows
