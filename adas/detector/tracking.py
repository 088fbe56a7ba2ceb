"""Greedy IoU matching and the one multi-object tracker of image-space detections.

Used by open-loop replay (track continuity of a drive) and by the temporal stress tests of the
robustness suite (frame drops and timestamp jitter), so both measure tracking the same way.
"""

import numpy as np

from adas.detector.postprocess import box_iou


def greedy_match(iou: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs, highest IoU first, each at least ``iou_threshold``.

    Ties keep row-major order (a stable sort), so the result does not depend on the platform.
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.size == 0:
        return []
    pairs = np.argwhere(iou >= iou_threshold)
    if not len(pairs):
        return []
    order = np.argsort(-iou[pairs[:, 0], pairs[:, 1]], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    out = []
    for k in order:
        r, c = (int(v) for v in pairs[k])
        if r in used_rows or c in used_cols:
            continue
        used_rows.add(r)
        used_cols.add(c)
        out.append((r, c))
    return out


def match_boxes(a: np.ndarray, b: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """(index in ``a``, index in ``b``) pairs of xyxy boxes, greedy by descending IoU."""
    if len(a) == 0 or len(b) == 0:
        return []
    return greedy_match(box_iou(a, b), iou_threshold)


class IouTracker:
    """Greedy IoU association of detections to live tracks, with constant-velocity prediction.

    A detection is scored against both the track's last box and its prediction at the frame's
    time (last displacement per unit time): at 5 fps a small object can move more than its own
    length between frames, while 3-px boxes jitter by a pixel when nothing moves. What IoU
    leaves unmatched is matched to the nearest predicted centre within one box length and of a
    similar size. Tracks unseen for more than ``max_age`` updates are dropped.

    ``t`` is the frame's timestamp (any unit); without one, updates are one time unit apart, so
    velocities are per frame. Track ids start at 1 and are never reused.
    """

    def __init__(self, iou_threshold: float = 0.3, max_age: int = 2) -> None:
        self.iou_threshold, self.max_age = iou_threshold, max_age
        # id -> (last box, velocity per time unit, time last seen, updates since seen)
        self._tracks: dict[int, tuple[np.ndarray, np.ndarray, float, int]] = {}
        self._next = 1
        self._clock = -1.0

    def update(self, boxes: np.ndarray, t: float | None = None) -> np.ndarray:
        """Track id of every box (xyxy) observed at time ``t``."""
        self._clock = float(t) if t is not None else self._clock + 1.0
        now = self._clock
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        ids = list(self._tracks)
        last = np.asarray([self._tracks[i][0] for i in ids]).reshape(-1, 4)
        pred = np.asarray([box + vel * (now - seen) for box, vel, seen, _ in self._tracks.values()]).reshape(
            -1, 4
        )
        assigned = np.full(len(boxes), -1, np.int64)
        if len(ids) and len(boxes):
            # Best of "stayed put" and "kept moving": pixel jitter on 3-px boxes makes either alone flaky.
            iou = np.maximum(box_iou(last, boxes), box_iou(pred, boxes))
            used: set[int] = set()
            for ti, di in greedy_match(iou, self.iou_threshold):
                assigned[di] = ids[ti]
                used.add(ti)
            self._match_by_centre(pred, boxes, ids, assigned, used)
        seen = set()
        for di, tid in enumerate(assigned):
            if tid < 0:
                tid, velocity = self._next, np.zeros(4)
                self._next += 1
                assigned[di] = tid
            else:
                box, _, when, _ = self._tracks[int(tid)]
                dt = now - when
                velocity = (boxes[di] - box) / dt if abs(dt) > 1e-9 else np.zeros(4)
            self._tracks[int(tid)] = (boxes[di].copy(), velocity, now, 0)
            seen.add(int(tid))
        for tid in [k for k in self._tracks if k not in seen]:
            box, vel, when, age = self._tracks[tid]
            if age + 1 > self.max_age:
                del self._tracks[tid]
            else:
                self._tracks[tid] = (box, vel, when, age + 1)
        return assigned

    @staticmethod
    def _match_by_centre(
        pred: np.ndarray, boxes: np.ndarray, ids: list[int], assigned: np.ndarray, used: set[int]
    ) -> None:
        """Small, fast objects (no overlap between frames yet): nearest predicted centre within one
        box length, similar size."""
        pc = (pred[:, :2] + pred[:, 2:]) / 2
        bc = (boxes[:, :2] + boxes[:, 2:]) / 2
        p_wh = np.maximum(pred[:, 2:] - pred[:, :2], 1e-3)
        b_wh = np.maximum(boxes[:, 2:] - boxes[:, :2], 1e-3)
        dist = np.linalg.norm(pc[:, None, :] - bc[None, :, :], axis=2)
        ratio = np.prod(p_wh, axis=1)[:, None] / np.prod(b_wh, axis=1)[None, :]
        ok = (dist <= p_wh.max(axis=1)[:, None]) & (ratio > 0.5) & (ratio < 2.0)
        for ti, di in sorted(zip(*np.nonzero(ok), strict=True), key=lambda td: dist[td[0], td[1]]):
            if int(ti) in used or assigned[di] >= 0:
                continue
            assigned[di] = ids[int(ti)]
            used.add(int(ti))
