"""Closed-loop episodes on highway-env with the perception in the loop.

Each control step (5 Hz):

1. the ego's top-down frame is rendered by the same simulator wrapper that made the training
   data (``world.ClosedLoopSimulator`` over ``adas.datasets.simulator.SceneSimulator``);
2. the run's weather/lighting transform is applied (``adas.datasets.weather.apply_weather``);
3. the perception (normally the packaged ONNX Runtime engine) returns detections;
4. detections become world-frame tracks and the proxy controller acts ONLY on those
   (``controller``: pixel->world, ego exclusion, alpha-beta tracker, IDM/ACC, safe lane changes);
   lane geometry and ego pose come from the map and localization, which are not under test.

Ground truth from the simulator is used only to measure (TTC, gaps, collisions), never to drive.

Every run plays an OpenSCENARIO file (one code path): the categories (``config/simulation.yaml``:
``cruise``, ``cut_in``, ``stopped_lead``, ``merge``) are the files under ``config/scenarios/``, the
library's runs the files ``scenario_library`` extracted. The player moves every entity but the
ego. An episode ends at the ego's first collision or at the storyboard's stop trigger.

The pieces: ``episode`` (the run and its trace as data), ``controller`` (what the ego does with
what it perceives), ``world`` (the simulator, the scene, ground-truth measurements), the player
(``openscenario``); this module is the step loop that ties them together. Domain code: no dagster import.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adas.datasets.config import DatagenConfig
from adas.datasets.weather import apply_weather
from adas.detector.postprocess import Detections
from adas.detector.tracking import match_boxes
from adas.simulation.config import SCENARIOS_DIR, ControllerConfig
from adas.simulation.controller import EgoState, ProxyController, WorldTracker, detections_to_world
from adas.simulation.episode import ClipFrame, EpisodeOutput, EpisodeSpec, EpisodeTrace
from adas.simulation.openscenario import Player, load_scenario
from adas.simulation.perception import FrameContext, GtBox, Perception
from adas.simulation.world import (
    ClosedLoopSimulator,
    collision_kind,
    collision_partner,
    ego_state,
    gt_boxes,
    lane_index_side,
    path_state,
    place_actors,
    setup_openscenario,
)

# A detection finds a vehicle when it overlaps the vehicle's GT box by this IoU (the replay's
# ``match_iou``): the same rule as open-loop time to first detection.
DETECTION_MATCH_IOU = 0.5


def run_episode(
    spec: EpisodeSpec,
    perception: Perception,
    datagen: DatagenConfig,
    controller: ControllerConfig,
    *,
    policy_hz: int = 5,
    clip_seconds: float | None = None,
    scenario_root: Path = SCENARIOS_DIR,
) -> EpisodeOutput:
    """Simulate one run; deterministic for a given spec (seeded simulator, weather and faults).

    ``clip_seconds``: keep the last seconds of perceived frames with detections (for clips).
    ``scenario_root``: the folder ``spec.xosc`` is relative to (an OpenSCENARIO run).
    """
    t_wall = time.perf_counter()
    t_cpu = time.process_time()
    dt = 1.0 / policy_hz
    rng = np.random.default_rng([spec.seed, 1])
    # Every run plays its file (``NotExecutableError`` names what is outside the subset).
    if spec.xosc is None:
        raise ValueError(
            f"run {spec.run_id}: EpisodeSpec.xosc is unset; every closed-loop run plays an OpenSCENARIO file "
            "(a category's `xosc` in config/simulation.yaml, or a library scenario)"
        )
    player = Player(load_scenario(Path(scenario_root) / spec.xosc, spec.parameters), step_s=dt, ego="Ego")
    sim = ClosedLoopSimulator(datagen, spec.scenario, spec.density, spec.seed, rng)
    try:
        out = _run(
            sim, spec, perception, datagen, controller, policy_hz, dt, clip_seconds, t_wall, player, t_cpu
        )
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
    clip_seconds: float | None,
    t_wall: float,
    player: Player,
    t_setup: float,
) -> EpisodeOutput:
    lap = _Laps(since=t_setup)
    # The scene: the scenario file's entities, moved by the player.
    actors = setup_openscenario(sim, player)
    ego = sim.ego
    road = sim.u.road
    frame_scale = datagen.frame.width / datagen.frame.render_width
    tracker = WorldTracker(ctrl_cfg)
    controller = ProxyController(ctrl_cfg)
    trace = EpisodeTrace(dt=dt)
    x0 = float(ego.position[0])
    set_speed = float(ego.speed)
    trace.route_length_m = set_speed * spec.duration_s
    n_steps = round(spec.duration_s * hz)
    clip_len = round((clip_seconds or 0.0) * hz)
    clip: deque[ClipFrame] = deque(maxlen=max(clip_len, 1))
    layout_rng_seed = [spec.seed, 3]
    ego_box: tuple[float, float, float, float] | None = None

    def conditions() -> tuple[str, str, int]:
        """The renderer's conditions now: the scenario's environment (it may change), else the run's."""
        c = player.conditions
        weather, lighting, severity = (
            (c.weather, c.lighting, c.severity) if c else (spec.weather, spec.lighting, spec.severity)
        )
        return weather, lighting, severity if (weather, lighting) != ("clear", "day") else 1

    def perceive(step: int, t: float) -> tuple[np.ndarray, Detections, list[GtBox], Any]:
        fr = sim.render()
        gt = gt_boxes(fr)
        lap("render")
        weather, lighting, severity = conditions()
        img = apply_weather(
            fr.image,
            weather,
            lighting,
            np.random.default_rng([spec.seed, 2, step]),
            severity=severity,
            layout_rng=np.random.default_rng(layout_rng_seed),
            noise_sigma=datagen.sensor_noise.sigma,
            blur_sigma=datagen.sensor_noise.blur_sigma_px,
        )
        ctx = FrameContext(spec.seed, step, t, weather, lighting, severity, gt)
        lap("weather")
        dets = perception.detect(img, ctx)
        lap("engine")
        return img, dets, gt, sim.u.viewer.sim_surface

    lap("setup")
    for step in range(n_steps):
        t = step * dt
        set_speed = _follow_intent(player, ego, road, set_speed, trace)
        lap("player")
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
        lap("tracker")
        current = road.network.get_lane(ego.lane_index)
        target = road.network.get_lane(ego.target_lane_index)
        changing = ego.target_lane_index != ego.lane_index
        path = [target] if not changing else [target, current]
        sides = {}
        for side in ("left", "right"):
            idx = lane_index_side(road, ego.lane_index, side, ego.position)
            if idx is not None:
                sides[side] = road.network.get_lane(idx)
        state_e = EgoState(ego.position.copy(), float(ego.speed), half, set_speed, t)
        cmd = controller.decide(state_e, tracks, path, sides, changing)
        if cmd.lane_change is not None:
            idx = lane_index_side(road, ego.lane_index, cmd.lane_change, ego.position)
            if idx is not None:
                ego.target_lane_index = idx
                trace.lane_changes += 1
        ego.commanded_acceleration = cmd.acceleration
        lap("controller")
        gap, ttc, lead_cls, lead_id = path_state(ego, road.vehicles)
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
        trace.lead_id.append(lead_id)
        visible, detected = _detected_ids(gt, dets)
        trace.visible_ids.append(visible)
        trace.detected_ids.append(detected)
        if clip_len:
            ego_box = _ego_box(gt)
            clip.append(ClipFrame(img, dets, ego_box, gt, f"t={t:4.1f}s v={ego.speed:4.1f}m/s"))
        before = {id(v): v.position.copy() for v in road.vehicles}
        lap("measure")
        sim.advance(dt)
        lap("world_step")
        # The actors to the new time; triggers fire on the ego's new state.
        player.step(ego_state(player, ego))
        place_actors(player, actors)
        if trace.event_triggered_s is None:
            trace.event_triggered_s = _first_event_start(player)
        lap("player")
        if ego.crashed:
            other = collision_partner(ego, road.vehicles)
            trace.collision = {
                "t_s": round(t + dt, 3),
                "with": getattr(other, "_adas_class", "unknown") if other is not None else "unknown",
                "kind": collision_kind(ego, other, before),
                "ego_speed_mps": round(float(trace.speed[-1]), 3),
            }
            if clip_len:
                img, _, gt, _ = perceive(step + 1, t + dt)
                clip.append(
                    ClipFrame(img, Detections.empty(), _ego_box(gt), gt, f"t={t + dt:4.1f}s COLLISION")
                )
            break
        if player.finished:  # the storyboard's stop trigger ends the run
            break
    trace.distance_m = float(ego.position[0]) - x0
    return EpisodeOutput(
        spec=spec, trace=trace, clip=list(clip), wall_s=time.perf_counter() - t_wall, stage_cpu_s=lap.total
    )


class _Laps:
    """CPU seconds of this process per stage of the step loop (each call closes the stage that ran
    since the previous one): what the benchmark reports; CPU time, not wall, so other load on the
    machine does not blur it."""

    def __init__(self, since: float) -> None:
        self.total: dict[str, float] = {}
        self._last = since

    def __call__(self, stage: str) -> None:
        now = time.process_time()
        self.total[stage] = self.total.get(stage, 0.0) + now - self._last
        self._last = now


def _follow_intent(player: Player, ego: Any, road: Any, set_speed: float, trace: EpisodeTrace) -> float:
    """The storyboard's ego actions as the controller's intent (never moves): the speed asked for
    becomes the set speed, a lane asked for the route's lane. Returns the set speed."""
    intent = player.ego_intent
    lane_id = intent.lane_id
    if intent.pose is not None:  # a trajectory: the lane it runs in now
        _, t_road = player.road.to_road(intent.pose[0], intent.pose[1])
        lane = player.road.lane_at(t_road)
        lane_id = lane.lane_id if lane is not None else lane_id
    if lane_id is not None:
        idx = (ego.lane_index[0], ego.lane_index[1], player.road.highway_lane_index(lane_id))
        if idx != ego.target_lane_index and ego.target_lane_index == ego.lane_index:
            ego.target_lane_index = idx
            trace.lane_changes += 1
    asked = intent.target_speed if intent.target_speed is not None else intent.speed
    return float(asked) if asked is not None else set_speed


def _first_event_start(player: Player) -> float | None:
    """When the first storyboard event started after the scenario's start (the scene's key event)."""
    for tr in player.log:
        if tr.transition == "startTransition" and tr.time > 0 and tr.element_type == "event":
            return round(tr.time, 3)
    return None


def _detected_ids(gt: Sequence[GtBox], dets: Detections) -> tuple[frozenset[int], frozenset[int]]:
    """The GT track ids in the frame (ego excluded), and those a detection matches one-to-one."""
    others = [g for g in gt if not g.is_ego]
    if not others:
        return frozenset(), frozenset()
    boxes = np.asarray([g.xyxy for g in others], np.float64)
    hit = match_boxes(boxes, dets.boxes, DETECTION_MATCH_IOU)
    return frozenset(g.track_id for g in others), frozenset(others[i].track_id for i, _ in hit)


def _ego_box(gt: Sequence[GtBox]) -> tuple[float, float, float, float] | None:
    return next((g.xyxy for g in gt if g.is_ego), None)
