"""Closed-loop episodes on highway-env with the perception in the loop.

Each control step (5 Hz):

1. the ego's top-down frame is rendered by the same simulator wrapper that made the training
   data (``adas.datasets.generator.SceneSimulator``: class-sized vehicles, box extraction,
   96x384 frames downscaled from 150x600 renders);
2. the run's weather/lighting transform is applied (``adas.datasets.weather.apply_weather``);
3. the perception (normally the packaged ONNX Runtime engine) returns detections;
4. detections become world-frame objects (the viewer's pixel->world transform), the ego's own
   box is excluded by position, and an alpha-beta tracker associates them over time;
5. the proxy controller acts ONLY on those tracks: IDM longitudinal control on the leader in
   the ego's path, lane keeping on the map (lane geometry and ego pose come from the map and
   localization, which are not under test), and a lane change only when the perceived target
   lane is clear front and rear.

Ground truth from the simulator is used only to measure (TTC, gaps, collisions), never to drive.

Scenario categories (``config/simulation.yaml``): ``cruise`` (free highway traffic),
``cut_in`` (an actor of a given class cuts in at a given gap time), ``stopped_lead`` (a
stationary actor in the ego's lane beyond the view), ``merge`` (merge-v0 on-ramp traffic).

Differences from stock highway-env, with reasons: traffic keeps the generator's settings
(collision checks off between traffic vehicles: crashed traffic stops forever); the ego has
collision checks on, so every contact with the ego is a collision; an episode ends at the
ego's first collision.

Domain code: no dagster import. highway-env is imported lazily (headless-safe imports).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from adas.datasets.coco import CATEGORY_IDS
from adas.datasets.generator import DatagenConfig, SceneSimulator, _import_simulator
from adas.datasets.weather import apply_weather
from adas.detector.postprocess import Detections
from adas.simulation.config import ControllerConfig
from adas.simulation.perception import FrameContext, GtBox, Perception

CLASS_NAMES: dict[int, str] = {v: k for k, v in CATEGORY_IDS.items()}
# merge-v0: the main road ends at x = 460 m; the route stops short of the end.
MERGE_ROUTE_END_X = 430.0
# stopped_lead: the stationary actor starts beyond the frame's forward view (~76 m).
STOPPED_LEAD_DISTANCE_M = 105.0
# cut_in: the actor starts this many seconds of closing (at its speed deficit) before the trigger.
CUT_IN_LEAD_TIME_S = 4.0
CUT_IN_LATEST_TRIGGER_S = 12.0
# A time to collision beyond this is "not closing in" (reported as none).
TTC_HORIZON_S = 60.0


class EpisodeSpec(BaseModel):
    """One concrete closed-loop run (a point of a parameter sweep)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    category: Literal["cruise", "cut_in", "stopped_lead", "merge"]
    scenario: Literal["highway", "merge"]
    density: Literal["sparse", "dense"]
    weather: str
    lighting: str
    severity: int
    seed: int
    duration_s: float
    ego_speed_mps: float
    gap_time_s: float | None = None
    actor_type: Literal["car", "truck", "motorcycle"] | None = None
    actor_speed_delta_mps: float | None = None
    source: str = "sweep"

    @property
    def condition(self) -> str:
        return f"{self.weather}/{self.lighting}"


# ==================================================================================================
# Perceived objects and the tracker (pure numpy; unit-tested without the simulator)


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


# ==================================================================================================
# The simulator side

_EGO_CLASS: dict[str, type] = {}


def _ego_class() -> type:
    """A ControlledVehicle steered on the map, whose acceleration the proxy controller sets."""
    if "cls" in _EGO_CLASS:
        return _EGO_CLASS["cls"]
    _import_simulator()
    from highway_env.vehicle.controller import ControlledVehicle
    from highway_env.vehicle.kinematics import Vehicle

    class PerceptionDrivenVehicle(ControlledVehicle):
        commanded_acceleration: float = 0.0

        def act(self, action: Any = None) -> None:
            self.follow_road()
            steering = float(
                np.clip(
                    self.steering_control(self.target_lane_index),
                    -self.MAX_STEERING_ANGLE,
                    self.MAX_STEERING_ANGLE,
                )
            )
            Vehicle.act(self, {"steering": steering, "acceleration": float(self.commanded_acceleration)})

    _EGO_CLASS["cls"] = PerceptionDrivenVehicle
    return PerceptionDrivenVehicle


class ClosedLoopSimulator(SceneSimulator):
    """The generator's scene simulator with a perception-driven ego and scripted actors."""

    def _replace_ego(self) -> None:
        super()._replace_ego()
        cls = _ego_class()
        road = self.u.road
        old = self.u.vehicle
        new = cls.create_from(old)
        new.target_lane_index = old.lane_index
        for attr in ("LENGTH", "WIDTH", "diagonal", "color", "_adas_track", "_adas_class", "_adas_ego"):
            setattr(new, attr, getattr(old, attr))
        new.check_collisions = True
        road.vehicles[road.vehicles.index(old)] = new
        self.u.controlled_vehicles = [new]

    @property
    def ego(self) -> Any:
        return self.u.vehicle


@dataclass
class ClipFrame:
    image: np.ndarray  # the perceived (weathered) frame
    detections: Detections
    ego_box: tuple[float, float, float, float] | None
    gt: list[GtBox]
    text: str


@dataclass
class EpisodeTrace:
    """Per-step ground-truth signals for the metrics (all lists have one entry per step)."""

    dt: float
    t: list[float] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    accel_cmd: list[float] = field(default_factory=list)
    gap: list[float] = field(
        default_factory=list
    )  # GT bumper gap to the vehicle ahead in the ego's path (inf: none)
    ttc: list[float] = field(default_factory=list)  # GT time to collision (inf: not closing)
    lead_class: list[str] = field(default_factory=list)
    on_road: list[bool] = field(default_factory=list)
    n_detections: list[int] = field(default_factory=list)
    n_tracks: list[int] = field(default_factory=list)
    distance_m: float = 0.0
    route_length_m: float = 0.0
    collision: dict[str, Any] | None = None
    lane_changes: int = 0
    event_triggered_s: float | None = None


@dataclass
class EpisodeOutput:
    spec: EpisodeSpec
    trace: EpisodeTrace
    clip: list[ClipFrame]
    wall_s: float
    cpu_s: float = 0.0  # this process's CPU time for the episode (robust to other load on the machine)


def _gt_boxes(fr: Any) -> list[GtBox]:
    return [
        GtBox(
            (b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]),
            b.category_id,
            b.track_id,
            b.is_ego,
        )
        for b in fr.boxes
    ]


def _lane_index_side(road: Any, index: tuple[str, str, int], side: str, position: np.ndarray) -> tuple | None:
    _from, _to, _id = index
    n = len(road.network.graph[_from][_to])
    new_id = _id - 1 if side == "left" else _id + 1
    if not 0 <= new_id < n:
        return None
    cand = (_from, _to, new_id)
    lane = road.network.get_lane(cand)
    if getattr(lane, "forbidden", False) or not lane.is_reachable_from(position):
        return None
    return cand


def _path_state(ego: Any, vehicles: Sequence[Any]) -> tuple[float, float, str]:
    """GT gap, TTC and class of the nearest vehicle ahead whose body overlaps the ego's path."""
    d = np.asarray([np.cos(ego.heading), np.sin(ego.heading)])
    n = np.asarray([-d[1], d[0]])
    best_gap, best_ttc, best_cls = math.inf, math.inf, ""
    for v in vehicles:
        if v is ego:
            continue
        rel = v.position - ego.position
        along = float(rel @ d)
        if along <= 0 or along > 150:
            continue
        lat = float(rel @ n)
        if abs(lat) >= (ego.WIDTH + v.WIDTH) / 2 + 0.2:
            continue
        gap = along - (ego.LENGTH + v.LENGTH) / 2
        if gap < best_gap:
            closing = ego.speed - v.speed * math.cos(v.heading - ego.heading)
            best_gap = gap
            best_ttc = max(gap, 0.0) / closing if closing > 0.1 else math.inf
            if best_ttc > TTC_HORIZON_S:
                best_ttc = math.inf  # not on a collision course within the horizon
            best_cls = getattr(v, "_adas_class", "car")
    return best_gap, best_ttc, best_cls


def _clear(
    road: Any, ego: Any, lane_index: tuple, s_from: float, s_to: float, keep: Sequence[Any] = ()
) -> None:
    lane = road.network.get_lane(lane_index)
    kept = []
    for v in road.vehicles:
        if v is ego or any(v is k for k in keep):
            kept.append(v)
            continue
        s, r = lane.local_coordinates(v.position)
        if s_from <= s <= s_to and abs(r) < lane.width_at(s) / 2 + 1.0:
            continue
        kept.append(v)
    road.vehicles = kept


def _keep_labelable(config: DatagenConfig, v: Any) -> None:
    """Widen/lengthen a scripted actor to the smallest size the dataset labels.

    The generator drops boxes under ``boxes.min_size_px`` on the saved frame (a 0.71 m wide
    motorcycle is drawn 3 px wide and saved 1.9 px): no detector is trained, or can be asked, to
    see those. The scenario's key actor stays inside the labelled domain; random traffic keeps
    its sampled sizes.
    """
    k = config.frame.scaling_px_per_m
    min_px = math.ceil(config.boxes.min_size_px * config.frame.render_width / config.frame.width - 1e-9)
    for attr in ("WIDTH", "LENGTH"):
        if int(getattr(v, attr) * k) < min_px:
            setattr(v, attr, (min_px + 0.05) / k)
    v.diagonal = math.hypot(v.LENGTH, v.WIDTH)


def _place_actor(
    sim: ClosedLoopSimulator, lane_index: tuple, s: float, speed: float, cls_name: str, scripted: bool
) -> Any:
    from highway_env.vehicle.behavior import IDMVehicle
    from highway_env.vehicle.kinematics import Vehicle

    road = sim.u.road
    lane = road.network.get_lane(lane_index)
    if scripted:
        v = IDMVehicle(
            road,
            lane.position(s, 0.0),
            heading=lane.heading_at(s),
            speed=speed,
            target_lane_index=lane_index,
            target_speed=speed,
        )
        v.enable_lane_change = False
    else:
        v = Vehicle(road, lane.position(s, 0.0), heading=lane.heading_at(s), speed=speed)
    sim._equip(v, cls_name=cls_name)
    _keep_labelable(sim.config, v)
    v.check_collisions = False
    road.vehicles.append(v)
    return v


def _setup_category(sim: ClosedLoopSimulator, spec: EpisodeSpec, rng: np.random.Generator) -> dict[str, Any]:
    """Place the category's scripted actors around the ego; returns the script state."""
    road, ego = sim.u.road, sim.ego
    ego.speed = spec.ego_speed_mps
    ego.target_speed = spec.ego_speed_mps
    # The ego must not start inside or right behind traffic.
    _clear(
        road,
        ego,
        ego.lane_index,
        ego.lane.local_coordinates(ego.position)[0] - 12,
        ego.lane.local_coordinates(ego.position)[0] + 25,
    )
    state: dict[str, Any] = {}
    s_e, _ = ego.lane.local_coordinates(ego.position)
    if spec.category == "stopped_lead":
        d = STOPPED_LEAD_DISTANCE_M
        _clear(road, ego, ego.lane_index, s_e - 5, s_e + d + 30)
        state["actor"] = _place_actor(
            sim, ego.lane_index, s_e + d, 0.0, spec.actor_type or "car", scripted=False
        )
    elif spec.category == "cut_in":
        sides = [
            s
            for s in ("left", "right")
            if _lane_index_side(road, ego.lane_index, s, ego.position) is not None
        ]
        side = sides[int(rng.integers(len(sides)))]
        actor_lane = _lane_index_side(road, ego.lane_index, side, ego.position)
        assert actor_lane is not None
        delta = spec.actor_speed_delta_mps if spec.actor_speed_delta_mps is not None else 5.0
        actor_speed = max(spec.ego_speed_mps - delta, 3.0)
        gap_time = spec.gap_time_s if spec.gap_time_s is not None else 1.2
        cls_name = spec.actor_type or "car"
        length = sim.config.vehicle_classes[cls_name].length_m[1]  # type: ignore[index]
        trigger_gap = gap_time * spec.ego_speed_mps
        s_actor = s_e + ego.LENGTH / 2 + length / 2 + trigger_gap + max(delta, 0.0) * CUT_IN_LEAD_TIME_S
        _clear(road, ego, ego.lane_index, s_e - 5, s_actor + 60)
        _clear(road, ego, actor_lane, s_e - 20, s_actor + 40)
        actor = _place_actor(sim, actor_lane, s_actor, actor_speed, cls_name, scripted=True)
        state.update(actor=actor, trigger_gap=trigger_gap, target_lane=ego.lane_index, triggered=False)
    return state


def _script_step(sim: ClosedLoopSimulator, spec: EpisodeSpec, state: dict[str, Any], t: float) -> bool:
    """Advance the category's script; True when its key event fires at this step."""
    if spec.category != "cut_in" or state.get("triggered"):
        return False
    ego, actor = sim.ego, state["actor"]
    lane = sim.u.road.network.get_lane(state["target_lane"])
    s_e, _ = lane.local_coordinates(ego.position)
    s_a, _ = lane.local_coordinates(actor.position)
    gap = s_a - s_e - (ego.LENGTH + actor.LENGTH) / 2
    if gap <= state["trigger_gap"] or (t >= CUT_IN_LATEST_TRIGGER_S and gap > 0):
        actor.target_lane_index = state["target_lane"]
        state["triggered"] = True
        return True
    return False


def run_episode(
    spec: EpisodeSpec,
    perception: Perception,
    datagen: DatagenConfig,
    controller: ControllerConfig,
    *,
    policy_hz: int = 5,
    clip_seconds: float | None = None,
) -> EpisodeOutput:
    """Simulate one run; deterministic for a given spec (seeded simulator, weather and faults).

    ``clip_seconds``: keep the last seconds of perceived frames with detections (for clips).
    """
    t_wall = time.perf_counter()
    t_cpu = time.process_time()
    dt = 1.0 / policy_hz
    rng = np.random.default_rng([spec.seed, 1])
    sim = ClosedLoopSimulator(datagen, spec.scenario, spec.density, spec.seed, rng)
    try:
        out = _run(sim, spec, perception, datagen, controller, policy_hz, dt, rng, clip_seconds, t_wall)
        out.cpu_s = time.process_time() - t_cpu
        return out
    finally:
        sim.close()


def _run(
    sim: ClosedLoopSimulator,
    spec: EpisodeSpec,
    perception: Perception,
    datagen: DatagenConfig,
    ctrl_cfg: ControllerConfig,
    hz: int,
    dt: float,
    rng: np.random.Generator,
    clip_seconds: float | None,
    t_wall: float,
) -> EpisodeOutput:
    state = _setup_category(sim, spec, rng)
    ego = sim.ego
    road = sim.u.road
    frame_scale = datagen.frame.width / datagen.frame.render_width
    tracker = WorldTracker(ctrl_cfg)
    controller = ProxyController(ctrl_cfg)
    trace = EpisodeTrace(dt=dt)
    x0 = float(ego.position[0])
    if spec.scenario == "merge":
        trace.route_length_m = max(MERGE_ROUTE_END_X - x0, 1.0)
    else:
        trace.route_length_m = spec.ego_speed_mps * spec.duration_s
    n_steps = round(spec.duration_s * hz)
    clip_len = round((clip_seconds or 0.0) * hz)
    clip: deque[ClipFrame] = deque(maxlen=max(clip_len, 1))
    layout_rng_seed = [spec.seed, 3]
    severity = spec.severity if (spec.weather, spec.lighting) != ("clear", "day") else 1
    ego_box: tuple[float, float, float, float] | None = None

    def perceive(step: int, t: float) -> tuple[np.ndarray, Detections, list[GtBox], Any]:
        fr = sim.render()
        gt = _gt_boxes(fr)
        img = apply_weather(
            fr.image,
            spec.weather,
            spec.lighting,
            np.random.default_rng([spec.seed, 2, step]),
            severity=severity,
            layout_rng=np.random.default_rng(layout_rng_seed),
            noise_sigma=datagen.sensor_noise.sigma,
            blur_sigma=datagen.sensor_noise.blur_sigma_px,
        )
        ctx = FrameContext(spec.seed, step, t, spec.weather, spec.lighting, severity, gt)
        return img, perception.detect(img, ctx), gt, sim.u.viewer.sim_surface

    for step in range(n_steps):
        t = step * dt
        if _script_step(sim, spec, state, t):
            trace.event_triggered_s = round(t, 3)
        img, dets, gt, surf = perceive(step, t)
        half = (ego.LENGTH / 2, ego.WIDTH / 2)
        world = detections_to_world(
            dets,
            origin=surf.origin,
            scaling_px_per_m=surf.scaling,
            frame_scale=frame_scale,
            ego_position=ego.position,
            ego_half_extent=half,
            exclusion_margin_m=ctrl_cfg.ego_exclusion_margin_m,
        )
        tracks = tracker.update(world, t, default_velocity=ego.velocity)
        current = road.network.get_lane(ego.lane_index)
        target = road.network.get_lane(ego.target_lane_index)
        changing = ego.target_lane_index != ego.lane_index
        path = [target] if not changing else [target, current]
        sides = {}
        for side in ("left", "right"):
            idx = _lane_index_side(road, ego.lane_index, side, ego.position)
            if idx is not None:
                sides[side] = road.network.get_lane(idx)
        state_e = EgoState(ego.position.copy(), float(ego.speed), half, spec.ego_speed_mps, t)
        cmd = controller.decide(state_e, tracks, path, sides, changing)
        if cmd.lane_change is not None:
            idx = _lane_index_side(road, ego.lane_index, cmd.lane_change, ego.position)
            if idx is not None:
                ego.target_lane_index = idx
                trace.lane_changes += 1
        ego.commanded_acceleration = cmd.acceleration
        gap, ttc, lead_cls = _path_state(ego, road.vehicles)
        trace.t.append(round(t, 3))
        trace.x.append(float(ego.position[0]))
        trace.speed.append(float(ego.speed))
        trace.accel_cmd.append(float(cmd.acceleration))
        trace.gap.append(float(gap))
        trace.ttc.append(float(ttc))
        trace.lead_class.append(lead_cls)
        trace.on_road.append(bool(ego.on_road))
        trace.n_detections.append(len(world))
        trace.n_tracks.append(len(tracks))
        if clip_len:
            ego_box = _ego_box(gt)
            clip.append(ClipFrame(img, dets, ego_box, gt, f"t={t:4.1f}s v={ego.speed:4.1f}m/s"))
        before = {id(v): v.position.copy() for v in road.vehicles}
        sim.advance(dt)
        if ego.crashed:
            other = _collision_partner(ego, road.vehicles)
            trace.collision = {
                "t_s": round(t + dt, 3),
                "with": getattr(other, "_adas_class", "unknown") if other is not None else "unknown",
                "kind": _collision_kind(ego, other, before),
                "ego_speed_mps": round(float(trace.speed[-1]), 3),
            }
            if clip_len:
                img, _, gt, _ = perceive(step + 1, t + dt)
                clip.append(
                    ClipFrame(img, Detections.empty(), _ego_box(gt), gt, f"t={t + dt:4.1f}s COLLISION")
                )
            break
        if spec.scenario == "merge" and float(ego.position[0]) >= MERGE_ROUTE_END_X:
            break
    trace.distance_m = float(ego.position[0]) - x0
    return EpisodeOutput(spec=spec, trace=trace, clip=list(clip), wall_s=time.perf_counter() - t_wall)


def _ego_box(gt: Sequence[GtBox]) -> tuple[float, float, float, float] | None:
    return next((g.xyxy for g in gt if g.is_ego), None)


def _collision_partner(ego: Any, vehicles: Sequence[Any]) -> Any:
    crashed = [v for v in vehicles if v is not ego and v.crashed]
    pool = crashed or [v for v in vehicles if v is not ego]
    if not pool:
        return None
    return min(pool, key=lambda v: float(np.linalg.norm(v.position - ego.position)))


def _collision_kind(ego: Any, other: Any, before: dict[int, np.ndarray]) -> str:
    """Front / rear / side, from the positions before the step (at 5 Hz the bodies overlap after it)."""
    if other is None:
        return "unknown"
    d = np.asarray([np.cos(ego.heading), np.sin(ego.heading)])
    rel = before.get(id(other), other.position) - before.get(id(ego), ego.position)
    along = float(rel @ d)
    half = (ego.LENGTH + other.LENGTH) / 4
    if along > half:
        return "front"
    if along < -half:
        return "rear"
    return "side"
