"""The perception-driven side of an episode: perceived objects, their tracker and the proxy controller.

Detections become world-frame objects (the viewer's pixel->world transform), the ego's own box
is excluded by position, and an alpha-beta tracker associates them over time; the proxy
controller acts ONLY on those tracks: IDM/ACC longitudinal control on the leader in the ego's
path and a lane change only when the perceived target lane is clear front and rear.

Pure numpy: unit-tested without the simulator. Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from adas.detector.postprocess import Detections
from adas.simulation.config import ControllerConfig


@dataclass(frozen=True)
class WorldDetection:
    center: tuple[float, float]  # world metres
    half_extent: tuple[float, float]  # half size along x, y [m]
    category_id: int
    score: float


@dataclass
class Track:
    track_id: int
    position: np.ndarray
    velocity: np.ndarray
    half_extent: np.ndarray
    category_id: int
    hits: int = 1
    last_seen_s: float = 0.0
    velocity_known: bool = False

    def predicted(self, t: float) -> np.ndarray:
        return self.position + self.velocity * (t - self.last_seen_s)


def detections_to_world(
    dets: Detections,
    *,
    origin: Sequence[float],
    scaling_px_per_m: float,
    frame_scale: float,
    ego_position: Sequence[float],
    ego_half_extent: Sequence[float],
    exclusion_margin_m: float,
) -> list[WorldDetection]:
    """Frame pixels -> world metres (top-down, world-aligned view); drops the ego's own box.

    ``frame_scale`` is saved/render pixels (0.64 for 384/600); ``origin`` the world position of
    the render's top-left pixel (``WorldSurface.origin``).
    """
    out: list[WorldDetection] = []
    k = 1.0 / (frame_scale * scaling_px_per_m)
    ex, ey = float(ego_position[0]), float(ego_position[1])
    hx_e, hy_e = float(ego_half_extent[0]), float(ego_half_extent[1])
    for box, score, cat in zip(
        dets.boxes.tolist(), dets.scores.tolist(), dets.category_ids.tolist(), strict=True
    ):
        x0, y0, x1, y1 = box
        cx = (x0 + x1) / 2 * k + origin[0]
        cy = (y0 + y1) / 2 * k + origin[1]
        if abs(cx - ex) < hx_e + exclusion_margin_m and abs(cy - ey) < hy_e + exclusion_margin_m:
            continue  # the ego sees itself in the top-down frame
        hx = max((x1 - x0) / 2 * k, 0.3)
        hy = max((y1 - y0) / 2 * k, 0.3)
        out.append(WorldDetection((cx, cy), (hx, hy), int(cat), float(score)))
    return out


class WorldTracker:
    """Nearest-neighbour association with an alpha-beta filter; coasts through short gaps.

    A track acts on the controller once confirmed (``confirm_hits``) and survives
    ``max_coast_s`` without detections: this is what absorbs frame-independent misses.
    """

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self.tracks: list[Track] = []
        self._next_id = 0

    def update(
        self, dets: Sequence[WorldDetection], t: float, default_velocity: Sequence[float]
    ) -> list[Track]:
        cfg = self.cfg
        preds = [tr.predicted(t) for tr in self.tracks]
        pairs: list[tuple[float, int, int]] = []
        for ti, p in enumerate(preds):
            tr = self.tracks[ti]
            # A track seen once has no measured velocity: it was predicted with the ego's, so
            # anything from stationary to the ego's speed must still fall inside its gate.
            gate = cfg.gate_m
            if not tr.velocity_known:
                gate += float(np.linalg.norm(tr.velocity)) * (t - tr.last_seen_s)
            for di, d in enumerate(dets):
                dist = math.hypot(p[0] - d.center[0], p[1] - d.center[1])
                if dist <= gate:
                    pairs.append((dist, ti, di))
        pairs.sort()
        used_t: set[int] = set()
        used_d: set[int] = set()
        for _, ti, di in pairs:
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            tr, d = self.tracks[ti], dets[di]
            dt = max(t - tr.last_seen_s, 1e-3)
            z = np.asarray(d.center, float)
            measured_v = (z - tr.position) / dt
            if tr.velocity_known:
                tr.velocity = tr.velocity + cfg.velocity_gain * (measured_v - tr.velocity)
            else:
                tr.velocity = measured_v
                tr.velocity_known = True
            tr.position = z
            tr.half_extent = 0.7 * tr.half_extent + 0.3 * np.asarray(d.half_extent, float)
            tr.category_id = d.category_id
            tr.hits += 1
            tr.last_seen_s = t
        for di, d in enumerate(dets):
            if di in used_d:
                continue
            self.tracks.append(
                Track(
                    track_id=self._next_id,
                    position=np.asarray(d.center, float),
                    velocity=np.asarray(default_velocity, float).copy(),
                    half_extent=np.asarray(d.half_extent, float),
                    category_id=d.category_id,
                    last_seen_s=t,
                )
            )
            self._next_id += 1
        self.tracks = [
            tr
            for tr in self.tracks
            if t - tr.last_seen_s <= (cfg.max_coast_s if tr.hits >= cfg.confirm_hits else 0.0) + 1e-9
        ]
        return self.confirmed(t)

    def confirmed(self, t: float) -> list[Track]:
        return [tr for tr in self.tracks if tr.hits >= self.cfg.confirm_hits]


# ==================================================================================================
# Proxy controller (acts only on perceived tracks)


class LaneLike:
    """What the controller needs from a lane (highway-env lanes satisfy it)."""

    def local_coordinates(self, position: np.ndarray) -> tuple[float, float]: ...  # pragma: no cover

    def width_at(self, longitudinal: float) -> float: ...  # pragma: no cover


@dataclass(frozen=True)
class EgoState:
    position: np.ndarray
    speed: float
    half_extent: tuple[float, float]  # half length, half width
    desired_speed: float
    time_s: float


@dataclass(frozen=True)
class Command:
    acceleration: float
    lane_change: Literal["left", "right"] | None = None
    leader_gap_m: float | None = None
    leader_speed_mps: float | None = None


@dataclass(frozen=True)
class _Neighbour:
    gap: float
    speed: float


def _neighbours(
    lane: Any, ego: EgoState, tracks: Sequence[Track], t: float, corridor: float | None
) -> tuple[_Neighbour | None, _Neighbour | None]:
    """Nearest perceived vehicle ahead and behind the ego on ``lane`` (bumper-to-bumper gaps).

    ``corridor``: half width of the ego's swept path (None: anything whose body overlaps the lane).
    """
    s_e, _ = lane.local_coordinates(ego.position)
    width = lane.width_at(s_e)
    front: _Neighbour | None = None
    rear: _Neighbour | None = None
    for tr in tracks:
        p = tr.predicted(t)
        s, r = lane.local_coordinates(p)
        half_w = float(tr.half_extent[1])
        limit = (corridor + half_w) if corridor is not None else (width / 2 + half_w - 0.3)
        if abs(r) >= limit:
            continue
        ds = s - s_e
        gap = abs(ds) - float(tr.half_extent[0]) - ego.half_extent[0]
        speed = float(tr.velocity[0])  # lanes run along +x on highway and merge roads
        if ds > 0 and (front is None or gap < front.gap):
            front = _Neighbour(gap, speed)
        elif ds <= 0 and (rear is None or gap < rear.gap):
            rear = _Neighbour(gap, speed)
    return front, rear


def idm_acceleration(cfg: ControllerConfig, speed: float, desired: float, leader: _Neighbour | None) -> float:
    """The ACC model of Kesting, Treiber and Helbing (2010): IDM blended with the constant-acceleration
    heuristic (CAH), which keeps IDM from over-braking when a vehicle cuts in at a gap that is
    short but not dangerous; ``cah_coolness`` 0 gives plain IDM. Clipped to the braking limit."""
    a, b = cfg.max_accel_mps2, cfg.comfortable_decel_mps2
    v = max(speed, 0.0)
    acc = a * (1.0 - (v / max(desired, 0.1)) ** cfg.delta)
    if leader is None:
        return float(np.clip(acc, -cfg.max_decel_mps2, cfg.max_accel_mps2))
    s = max(leader.gap, 0.1)
    v_l = max(leader.speed, 0.0)
    dv = v - v_l
    s_star = cfg.min_gap_m + max(0.0, v * cfg.time_headway_s + v * dv / (2.0 * math.sqrt(a * b)))
    a_idm = acc - a * (s_star / s) ** 2
    # CAH with the leader's acceleration unknown (taken as 0): the deceleration that just avoids contact.
    a_cah = 0.0 if dv <= 0 else -(dv**2) / (2.0 * s)
    c = cfg.cah_coolness
    if a_idm >= a_cah or c == 0:
        out = a_idm
    else:
        out = (1 - c) * a_idm + c * (a_cah + b * math.tanh((a_idm - a_cah) / b))
    return float(np.clip(out, -cfg.max_decel_mps2, cfg.max_accel_mps2))


class ProxyController:
    """IDM on the perceived leader in the ego's path + MOBIL-like safe lane changes."""

    def __init__(self, cfg: ControllerConfig) -> None:
        self.cfg = cfg
        self._last_change_s = -1e9

    def decide(
        self,
        ego: EgoState,
        tracks: Sequence[Track],
        path_lanes: Sequence[Any],
        side_lanes: dict[str, Any],
        changing: bool,
    ) -> Command:
        cfg = self.cfg
        t = ego.time_s
        corridor = ego.half_extent[1] + cfg.path_margin_m
        leader: _Neighbour | None = None
        for lane in path_lanes:
            front, _ = _neighbours(lane, ego, tracks, t, corridor)
            if front is not None and (leader is None or front.gap < leader.gap):
                leader = front
        acc = idm_acceleration(cfg, ego.speed, ego.desired_speed, leader)
        change: Literal["left", "right"] | None = None
        if (
            cfg.lane_changes
            and not changing
            and leader is not None
            and t - self._last_change_s >= cfg.lane_change_cooldown_s
            and leader.speed < ego.desired_speed - cfg.lane_change_min_gain_mps
            and leader.gap < 60.0
        ):
            best_gain = 0.5
            for side in ("left", "right"):
                lane = side_lanes.get(side)
                if lane is None:
                    continue
                front, rear = _neighbours(lane, ego, tracks, t, None)
                if rear is not None:
                    needed = cfg.lane_change_rear_gap_m + max(0.0, rear.speed - ego.speed) * 2.0
                    if rear.gap < needed:
                        continue
                if front is not None:
                    if front.gap < cfg.lane_change_front_gap_m:
                        continue
                    if front.speed < leader.speed + cfg.lane_change_min_gain_mps:
                        continue
                gain = idm_acceleration(cfg, ego.speed, ego.desired_speed, front) - acc
                if gain > best_gain:
                    best_gain, change = gain, side  # type: ignore[assignment]
            if change is not None:
                self._last_change_s = t
        if ego.speed + acc / 5.0 < 0.0:
            acc = -ego.speed * 5.0  # do not reverse
        return Command(
            acceleration=acc,
            lane_change=change,
            leader_gap_m=None if leader is None else round(leader.gap, 3),
            leader_speed_mps=None if leader is None else round(leader.speed, 3),
        )
