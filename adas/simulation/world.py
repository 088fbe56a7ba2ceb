"""The simulator side of a closed-loop episode: highway-env with a perception-driven ego and the scenario's actors.

The renderer is the generator's (``adas.datasets.simulator.SceneSimulator``: class-sized vehicles,
box extraction, 96x384 frames downscaled from 150x600 renders); the ego is a ``ControlledVehicle``
whose acceleration the proxy controller sets. Every scene is an OpenSCENARIO file: its road and
entities replace highway-env's (``setup_openscenario``) and the player moves the actors
(``place_actors``). Ground truth from the simulator is read here only to measure (gaps, TTC,
collisions), never to drive.

Differences from stock highway-env, with reasons: actors have collision checks off (the player
moves them; an actor does not stop on contact); the ego has collision checks on, so every contact
with the ego is a collision.

Domain code: no dagster import. highway-env is imported lazily (headless-safe imports, and the
code location loads without the simulator).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from adas.datasets.config import DatagenConfig
from adas.datasets.simulator import SceneSimulator, import_simulator
from adas.simulation.openscenario import EgoState, Player, PlayerError
from adas.simulation.perception import GtBox

# A time to collision beyond this is "not closing in" (reported as none).
TTC_HORIZON_S = 60.0


_EGO_CLASS: dict[str, type] = {}


def _ego_class() -> type:
    """A ControlledVehicle steered on the map, whose acceleration the proxy controller sets."""
    if "cls" in _EGO_CLASS:
        return _EGO_CLASS["cls"]
    import_simulator()
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
    """The generator's scene simulator with a perception-driven ego (the scene: ``setup_openscenario``)."""

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

    def render(self) -> Any:
        """The generator's frame, its lane markings drawn by ``_draw_straight_stripes`` (the same pixels).

        highway-env draws each of a frame's ~190 lane-marking stripes with two ``lane.position`` calls
        and two ``vec2pix`` calls on small numpy arrays: half of the render's CPU time. The scoped
        replacement computes them in one array operation per line and is swapped back afterwards.
        """
        from highway_env.road.graphics import LaneGraphics

        original = LaneGraphics.__dict__["draw_stripes"]
        LaneGraphics.draw_stripes = classmethod(_draw_straight_stripes(original.__func__))  # type: ignore[method-assign, assignment]
        try:
            return super().render()
        finally:
            LaneGraphics.draw_stripes = original  # type: ignore[method-assign]


def _draw_straight_stripes(original: Any) -> Any:
    """highway-env's ``LaneGraphics.draw_stripes`` for a ``StraightLane`` in array operations: the
    same float operations in the same order per stripe, truncated to pixels as ``pix`` does, so the
    frame is identical (tested); any other lane goes to ``original``."""
    import pygame
    from highway_env.road.lane import StraightLane

    def draw_stripes(cls: Any, lane: Any, surface: Any, starts: Any, ends: Any, lats: Any) -> None:
        if type(lane) is not StraightLane:
            original(cls, lane, surface, starts, ends, lats)
            return
        starts = np.clip(starts, 0, lane.length)
        ends = np.clip(ends, 0, lane.length)
        keep = np.abs(starts - ends) > 0.5 * cls.STRIPE_LENGTH
        if not keep.any():
            return
        lat = np.asarray(lats, dtype=float)[keep][:, None]
        a = lane.start + starts[keep][:, None] * lane.direction + lat * lane.direction_lateral
        b = lane.start + ends[keep][:, None] * lane.direction + lat * lane.direction_lateral
        origin = np.asarray(surface.origin, dtype=float)
        pa = np.trunc((a - origin) * surface.scaling).astype(np.int64).tolist()
        pb = np.trunc((b - origin) * surface.scaling).astype(np.int64).tolist()
        width = max(surface.pix(cls.STRIPE_WIDTH), 1)
        for (ax, ay), (bx, by) in zip(pa, pb, strict=True):
            pygame.draw.line(surface, surface.WHITE, (ax, ay), (bx, by), width)

    return draw_stripes


def gt_boxes(fr: Any) -> list[GtBox]:
    return [
        GtBox(
            (b.bbox[0], b.bbox[1], b.bbox[0] + b.bbox[2], b.bbox[1] + b.bbox[3]),
            b.category_id,
            b.track_id,
            b.is_ego,
        )
        for b in fr.boxes
    ]


def lane_index_side(road: Any, index: tuple[str, str, int], side: str, position: np.ndarray) -> tuple | None:
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


def path_state(ego: Any, vehicles: Sequence[Any]) -> tuple[float, float, str, int | None]:
    """GT gap, TTC, class and track id of the nearest vehicle ahead whose body overlaps the ego's path."""
    d = np.asarray([np.cos(ego.heading), np.sin(ego.heading)])
    n = np.asarray([-d[1], d[0]])
    best_gap, best_ttc, best_cls, best_id = math.inf, math.inf, "", None
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
            best_id = getattr(v, "_adas_track", None)
    return best_gap, best_ttc, best_cls, best_id


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


def collision_partner(ego: Any, vehicles: Sequence[Any]) -> Any:
    crashed = [v for v in vehicles if v is not ego and v.crashed]
    pool = crashed or [v for v in vehicles if v is not ego]
    if not pool:
        return None
    return min(pool, key=lambda v: float(np.linalg.norm(v.position - ego.position)))


def collision_kind(ego: Any, other: Any, before: dict[int, np.ndarray]) -> str:
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


# --------------------------------------------------------------------------- OpenSCENARIO scenes

# The platform's category names of OpenSCENARIO vehicle categories (anything else is drawn as a car).
_OSC_CLASSES: Final[dict[str, str]] = {
    "car": "car",
    "van": "car",
    "truck": "truck",
    "semitrailer": "truck",
    "trailer": "truck",
    "bus": "truck",
    "motorbike": "motorcycle",
    "bicycle": "motorcycle",
}


def setup_openscenario(sim: ClosedLoopSimulator, player: Player) -> dict[str, Any]:
    """Make highway-env's scene the scenario's: its road (lanes of highway-env's width), the ego at its
    ``Init`` pose and speed, one vehicle per other entity (sized by its bounding box, classed by its
    category) and no other traffic. Returns the actors' vehicles by entity name."""
    from highway_env.road.lane import StraightLane
    from highway_env.road.road import RoadNetwork
    from highway_env.vehicle.kinematics import Vehicle

    road_osc = player.road
    wrong = [lane.lane_id for lane in road_osc.lanes if abs(lane.width - StraightLane.DEFAULT_WIDTH) > 1e-6]
    if wrong:
        raise PlayerError(
            f"{player.scenario.path}: lanes {wrong} of road {road_osc.road_id} are not "
            f"{StraightLane.DEFAULT_WIDTH:g} m wide (highway-env's lane width)"
        )
    road, ego = sim.u.road, sim.ego
    road.network = RoadNetwork.straight_road_network(len(road_osc.lanes), length=road_osc.length)
    poses = {p.name: p for p in player.poses()}
    ego_pose = poses[player.ego_name]  # type: ignore[index]
    ego.LENGTH, ego.WIDTH = ego_pose.length, ego_pose.width
    ego.diagonal = math.hypot(ego.LENGTH, ego.WIDTH)
    x, y, h = road_osc.to_highway(*ego_pose.box_center, ego_pose.h)
    ego.position = np.asarray([x, y], dtype=float)
    ego.heading, ego.speed, ego.target_speed = h, ego_pose.v, ego_pose.v
    ego.lane_index = road.network.get_closest_lane_index(ego.position, ego.heading)
    ego.lane = road.network.get_lane(ego.lane_index)
    ego.target_lane_index = ego.lane_index
    road.vehicles = [ego]
    entities = {e.name: e for e in player.scenario.entities}
    actors: dict[str, Any] = {}
    for name, pose in poses.items():
        if pose.is_ego:
            continue
        x, y, h = road_osc.to_highway(*pose.box_center, pose.h)
        v = Vehicle(road, np.asarray([x, y], dtype=float), heading=h, speed=pose.v)
        sim._equip(v, cls_name=_OSC_CLASSES.get(entities[name].category, "car"))
        v.LENGTH, v.WIDTH = pose.length, pose.width
        _keep_labelable(sim.config, v)
        v.check_collisions = False
        road.vehicles.append(v)
        actors[name] = v
    return actors


def place_actors(player: Player, actors: dict[str, Any]) -> None:
    """Put every actor where the player has it now (box centre, heading, speed)."""
    road_osc = player.road
    for pose in player.poses():
        v = actors.get(pose.name)
        if v is None:
            continue
        x, y, h = road_osc.to_highway(*pose.box_center, pose.h)
        v.position = np.asarray([x, y], dtype=float)
        v.heading, v.speed = h, pose.v


def ego_state(player: Player, ego: Any) -> EgoState:
    """The highway-env ego as the player's ``EgoState``: its reference point in the OpenSCENARIO frame."""
    x, y, h = player.road.from_highway(float(ego.position[0]), float(ego.position[1]), float(ego.heading))
    body = player.body(player.ego_name)  # type: ignore[arg-type]
    c, s = math.cos(h), math.sin(h)
    return EgoState(x - body.cx * c + body.cy * s, y - body.cx * s - body.cy * c, h, float(ego.speed))
