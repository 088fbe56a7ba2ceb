"""The one tracker and greedy matcher shared by replay and the robustness suite."""

import numpy as np

from adas.detector.tracking import IouTracker, greedy_match


def _box(x: float, y: float = 10.0, w: float = 8.0, h: float = 4.0) -> list[float]:
    return [x, y, x + w, y + h]


def test_greedy_match_takes_the_highest_iou_first_and_respects_the_threshold() -> None:
    iou = np.array([[0.6, 0.7], [0.65, 0.2], [0.1, 0.05]])
    # (0,1)=0.7 first, then (1,0)=0.65; row 2 stays unmatched below 0.3.
    assert greedy_match(iou, 0.3) == [(0, 1), (1, 0)]
    assert greedy_match(iou, 0.69) == [(0, 1)]
    assert greedy_match(np.zeros((0, 3)), 0.3) == []


def test_a_moving_object_keeps_its_id_even_when_frames_do_not_overlap() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_age=2)
    ids = [int(tracker.update(np.array([_box(6.0 * k)]))[0]) for k in range(6)]
    # 6 px per frame on an 8-px box: IoU 0.14 between frames; the centre fallback and then
    # the constant-velocity prediction keep the identity.
    assert ids == [1] * 6


def test_timestamps_predict_across_a_dropped_frame() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_age=2)
    tracker.update(np.array([_box(0.0)]), t=0.0)
    tracker.update(np.array([_box(5.0)]), t=0.1)
    # Frame at t=0.2 dropped; at t=0.3 the object is 10 px further than at t=0.1.
    assert tracker.update(np.array([_box(15.0)]), t=0.3).tolist() == [1]


def test_two_objects_keep_their_own_ids_and_a_lost_track_is_retired() -> None:
    tracker = IouTracker(iou_threshold=0.3, max_age=1)
    first = tracker.update(np.array([_box(0.0), _box(100.0)]))
    second = tracker.update(np.array([_box(101.0), _box(1.0)]))
    assert first.tolist() == [1, 2] and second.tolist() == [2, 1]
    tracker.update(np.zeros((0, 4)))
    tracker.update(np.zeros((0, 4)))  # two misses > max_age=1: both retired
    assert tracker.update(np.array([_box(1.0)])).tolist() == [3]
