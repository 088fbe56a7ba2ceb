"""Open-loop replay metrics on hand-built sequences: matching, TTFD, tracker continuity, ghosts, divergence."""

from __future__ import annotations

import numpy as np
import pytest

from adas.detector.postprocess import Detections
from adas.simulation.config import ReplayConfig
from adas.simulation.replay import evaluate_model, flag_segments, replay

PX_PER_M = 3.52
EGO = [100.0, 40.0, 16.0, 7.0]  # xywh


def _coco(tracks: dict[int, tuple[int, list[float]]], n: int = 20) -> dict:
    """One sequence of ``n`` frames; tracks: id -> (category, [x, y, w, h] moving +2 px/frame in x)."""
    images, anns = [], []
    aid = 1
    for k in range(n):
        images.append({"id": k + 1, "file_name": f"f{k}.png", "width": 384, "height": 96, "severity": 3})
        anns.append(
            {"id": aid, "image_id": k + 1, "category_id": 1, "bbox": EGO, "track_id": 0, "is_ego": True}
        )
        aid += 1
        for tid, (cat, (x, y, w, h)) in tracks.items():
            anns.append(
                {
                    "id": aid,
                    "image_id": k + 1,
                    "category_id": cat,
                    "bbox": [x + 2 * k, y, w, h],
                    "track_id": tid,
                    "is_ego": False,
                }
            )
            aid += 1
    seq = {
        "sequence_id": "seq00-highway-s0001",
        "image_ids": [k + 1 for k in range(n)],
        "fps": 5.0,
        "scenario": "highway",
        "weather": "fog",
        "lighting": "day",
    }
    return {"images": images, "annotations": anns, "sequences": [seq]}


def _dets(coco: dict, keep) -> dict[int, Detections]:  # type: ignore[no-untyped-def]
    """Ground truth as detections (the ego included, as a detector reports it), filtered by keep(track, frame)."""
    out: dict[int, list] = {}
    for a in coco["annotations"]:
        k = a["image_id"] - 1
        if a["is_ego"] or keep(a["track_id"], k):
            x, y, w, h = a["bbox"]
            out.setdefault(a["image_id"], []).append(([x, y, x + w, y + h], a["category_id"]))
    return {
        i: Detections(
            np.array([b for b, _ in v], np.float32), np.ones(len(v), np.float32), np.array([c for _, c in v])
        )
        for i, v in out.items()
    }


TRACKS = {1: (1, [150.0, 20.0, 16.0, 7.0]), 2: (2, [200.0, 60.0, 35.0, 9.0]), 3: (3, [60.0, 70.0, 8.0, 3.0])}


def test_perfect_detections_and_the_ego_is_neither_miss_nor_false_positive() -> None:
    coco = _coco(TRACKS)
    r = evaluate_model(coco, _dets(coco, lambda t, k: True), ReplayConfig(), "oracle")
    t = r.totals()
    assert t["recall"] == 1.0 and t["precision"] == 1.0 and t["fp_per_frame"] == 0.0
    assert t["never_detected"] == 0 and t["mean_ttfd_s"] == 0.0
    assert t["fragmentations"] == 0 and t["id_switches"] == 0 and t["ghost_tracks"] == 0


def test_time_to_first_detection_fragmentation_and_never_detected() -> None:
    coco = _coco(TRACKS)

    def keep(track: int, k: int) -> bool:
        if track == 1:
            return k >= 3  # first detected 3 frames (0.6 s) late
        if track == 2:
            return not 8 <= k < 14  # lost for 6 frames (> tracker max age): fragmented, new id
        return False  # the motorcycle is never detected

    r = evaluate_model(coco, _dets(coco, keep), ReplayConfig(tracker_max_age=3), "cand")
    objs = {o.gt_track: o for o in r.objects}
    assert objs[1].time_to_first_detection_s == pytest.approx(0.6)
    assert objs[2].fragmentations == 1 and objs[2].id_switches == 1
    assert objs[3].time_to_first_detection_s is None and objs[3].category == "motorcycle"
    assert r.per_class_ttfd()["motorcycle"]["never_detected"] == 1


def test_ghost_tracks_are_persistent_false_positives_only() -> None:
    coco = _coco({1: TRACKS[1]})
    dets = _dets(coco, lambda t, k: True)
    for image_id, d in list(dets.items()):
        ghost = np.array([[300.0, 5.0, 316.0, 12.0]], np.float32)  # every frame, nothing there
        blip = (
            np.array([[20.0, 80.0, 30.0, 86.0]], np.float32)
            if image_id == 4
            else np.zeros((0, 4), np.float32)
        )
        extra = np.concatenate([ghost, blip])
        dets[image_id] = Detections(
            np.concatenate([d.boxes, extra]),
            np.ones(len(d) + len(extra), np.float32),
            np.concatenate([d.category_ids, np.ones(len(extra), int)]),
        )
    r = evaluate_model(coco, dets, ReplayConfig(min_ghost_track_frames=3), "cand")
    assert r.sequences[0].ghost_tracks == 1  # the one-frame blip is a false positive, not a ghost track
    assert r.totals()["fp_per_frame"] == pytest.approx(21 / 20)


def test_divergent_segments_are_flagged_with_tracks_in_metres() -> None:
    coco = _coco(TRACKS)
    prod = _dets(coco, lambda t, k: True)
    cand = _dets(coco, lambda t, k: not (t in (1, 2) and k >= 10))  # the candidate loses two objects late on
    rep = replay(coco, cand, prod, ReplayConfig(segment_frames=10, worst_segments=0), PX_PER_M)
    assert [f.segment_id for f in rep.flagged] == ["seq00-highway-s0001-seg01"]
    f = rep.flagged[0]
    assert "candidate recall" in f.reasons[0] and f.candidate_recall < f.production_recall
    assert f.weather == "fog" and f.severity == 3 and f.start_frame == 10
    car = next(t for t in f.tracks if t.gt_track == 1)
    assert car.missed_by_candidate == 10 and car.missed_by_production == 0
    p0 = car.points[0]
    # 150 + 2*10 + 8 = 178 px centre vs ego centre 108 px -> 70 px ahead = 19.9 m
    assert p0.x_m == pytest.approx(70 / PX_PER_M, abs=1e-2) and p0.length_m == pytest.approx(
        16 / PX_PER_M, abs=1e-2
    )
    assert len(f.ego_points) == 10


def test_no_divergence_no_flags() -> None:
    coco = _coco(TRACKS)
    d = _dets(coco, lambda t, k: True)
    cand, prod = evaluate_model(coco, d, ReplayConfig(), "c"), evaluate_model(coco, d, ReplayConfig(), "p")
    assert flag_segments(coco, cand, prod, d, d, ReplayConfig(worst_segments=0), PX_PER_M) == []
