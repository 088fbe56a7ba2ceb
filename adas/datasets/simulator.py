"""One highway-env episode with class-sized, coloured vehicles, rendered top-down with its
ground-truth boxes (see :mod:`adas.datasets.generator` for the modelling choices).

highway-env and pygame are imported lazily (:func:`import_simulator`) so that importing this
module (from the Dagster code location, or a spawned worker unpickling a task) stays cheap and
headless-safe. Kept as one module because the simulator class is one unit: its rendering,
traffic densification and box extraction share the episode's state.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from adas.datasets.coco import CATEGORY_IDS
from adas.datasets.config import DatagenConfig

_CLASS_DEFAULTS: dict[type, dict[str, Any]] = {}


def import_simulator() -> None:
    """Import pygame/highway-env headless, once per process, and snapshot mutable class defaults."""
    # 'offscreen', not 'dummy': with 'dummy' highway-env disables its viewer and renders black frames.
    os.environ["SDL_VIDEODRIVER"] = "offscreen"
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    if _CLASS_DEFAULTS:
        return
    import highway_env  # noqa: F401  (registers the gymnasium environments)
    from highway_env.vehicle.behavior import IDMVehicle, LinearVehicle
    from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
    from highway_env.vehicle.kinematics import Vehicle
    from highway_env.vehicle.objects import RoadObject

    for cls in (RoadObject, Vehicle, ControlledVehicle, MDPVehicle, IDMVehicle, LinearVehicle):
        _CLASS_DEFAULTS[cls] = {k: v for k, v in vars(cls).items() if k.isupper()}


def _restore_class_defaults() -> None:
    # intersection-v0 mutates IDMVehicle class attributes (DISTANCE_WANTED, COMFORT_ACC_*) in
    # reset(); without a restore, the next scene in the same worker would depend on scheduling.
    for cls, attrs in _CLASS_DEFAULTS.items():
        for k, v in attrs.items():
            setattr(cls, k, v)


@dataclass(frozen=True)
class Box:
    """A ground-truth box on the SAVED frame, xywh in pixels."""

    category_id: int
    bbox: tuple[float, float, float, float]
    track_id: int
    is_ego: bool


@dataclass
class RenderedFrame:
    render_image: np.ndarray  # clean render, render size
    image: np.ndarray  # clean, downscaled to the saved size (before weather)
    boxes: list[Box]


def _drawn_corners(v: Any, surf: Any) -> np.ndarray:
    """Corners (4x2, render px) of the body rectangle highway-env actually draws for vehicle ``v``.

    VehicleGraphics.display draws the body into a square surface of int(pix(L + 2 m)) with integer
    offsets, rotates it and centres it on ``surf.pos2pix(position)``. Those integer roundings shift
    the drawn body by up to ~2 px from the ideal ``v.polygon()`` (pos2pix of the polygon corners),
    which matters for 3-px motorcycles after downscaling, so boxes follow the drawn rectangle.
    """
    k = surf.scaling
    length, width = v.LENGTH, v.WIDTH
    tire = 1.0  # VehicleGraphics: tire_length
    size = int((length + 2 * tire) * k)
    rx0, rw = int(tire * k), int(length * k)
    ry0, rh = int(((length + 2 * tire) / 2 - width / 2) * k), int(width * k)
    half = math.ceil(size / 2)  # pygame truncates the float blit origin pos - size / 2
    local = np.array(
        [
            [rx0 - half, ry0 - half],
            [rx0 + rw - half, ry0 - half],
            [rx0 + rw - half, ry0 + rh - half],
            [rx0 - half, ry0 + rh - half],
        ],
        dtype=float,
    )
    h = v.heading if abs(v.heading) > 2 * np.pi / 180 else 0.0  # same dead band as the renderer
    c, s = np.cos(h), np.sin(h)
    rot = local @ np.array([[c, s], [-s, c]])
    return rot + np.asarray(surf.pos2pix(v.position[0], v.position[1]), dtype=float)


class SceneSimulator:
    """One highway-env episode with class-sized, coloured vehicles and box extraction."""

    def __init__(
        self,
        config: DatagenConfig,
        scenario: str,
        density: str,
        env_seed: int,
        rng: np.random.Generator,
    ) -> None:
        import_simulator()
        _restore_class_defaults()
        import gymnasium as gym

        self.config = config
        self.scenario = scenario
        self.rng = rng
        self.sc = config.scenarios[scenario]
        self.dc = self.sc.densities[density]
        self._class_names = list(config.vehicle_classes)
        p = np.array([c.proportion for c in config.vehicle_classes.values()])
        self._class_p = p / p.sum()
        self._next_track = 0
        env_config: dict[str, Any] = {
            "screen_width": config.frame.render_width,
            "screen_height": config.frame.render_height,
            "scaling": config.frame.scaling_px_per_m,
            "centering_position": list(self.sc.centering_position),
            "offscreen_rendering": True,
            "simulation_frequency": self.sc.simulation_frequency,
            "policy_frequency": 1,
            "duration": 10_000,
            "show_trajectories": False,
            **self.dc.env_config,
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "out of date" notices for the v0 environments
            self.env = gym.make(
                self.sc.env_id, render_mode="rgb_array", config=env_config, disable_env_checker=True
            )
            self.env.reset(seed=env_seed)
        self.u = self.env.unwrapped
        # Never re-render intermediate substeps (we step the road directly, but stay safe).
        self.u._automatic_rendering = lambda: None
        self._substeps = 0
        self._replace_ego()
        for v in list(self.u.road.vehicles):
            self._equip(v)
        self._densify(self.dc.extra_vehicles)
        self._resolve_overlaps()
        self.env.render()  # creates the viewer

    # -- setup ---------------------------------------------------------------------------------

    def _replace_ego(self) -> None:
        from highway_env.vehicle.behavior import IDMVehicle

        road = self.u.road
        ego = self.u.vehicle
        if self.sc.ego_lane is None:
            new = IDMVehicle.create_from(ego)
            road.vehicles[road.vehicles.index(ego)] = new
        else:
            # The stock ego becomes ordinary traffic; ours starts on the configured lane.
            road.vehicles[road.vehicles.index(ego)] = IDMVehicle.create_from(ego)
            lane_index = tuple(self.sc.ego_lane)
            lane = road.network.get_lane(lane_index)
            s = float(self.rng.uniform(*self.sc.ego_longitudinal_m))
            speed = self.sc.ego_speed_mps or lane.speed_limit
            new = IDMVehicle.make_on_lane(road, lane_index, longitudinal=s, speed=speed)
            if self.sc.ego_destinations:
                new.plan_route_to(
                    self.sc.ego_destinations[int(self.rng.integers(len(self.sc.ego_destinations)))]
                )
            road.vehicles = [v for v in road.vehicles if np.linalg.norm(v.position - new.position) > 12.0]
            road.vehicles.insert(0, new)
        self.u.controlled_vehicles = [new]
        self._equip(new, cls_name="car", is_ego=True)

    def _window(self, margin_x: float = 0.0, margin_y: float = 0.0) -> tuple[float, float, float, float]:
        """World rectangle (x0, x1, y0, y1) shown in the frame, as the viewer centres it on the ego."""
        cfg = self.config.frame
        w = cfg.render_width / cfg.scaling_px_per_m
        h = cfg.render_height / cfg.scaling_px_per_m
        cx, cy = self.sc.centering_position
        ex, ey = self.u.vehicle.position
        return (
            ex - cx * w - margin_x,
            ex + (1 - cx) * w + margin_x,
            ey - cy * h - margin_y,
            ey + (1 - cy) * h + margin_y,
        )

    def _visible_count(self) -> int:
        x0, x1, y0, y1 = self._window()
        return sum(1 for v in self.u.road.vehicles if x0 <= v.position[0] <= x1 and y0 <= v.position[1] <= y1)

    def _equip(self, v: Any, cls_name: str | None = None, is_ego: bool = False) -> None:
        """Give a vehicle its class size, colour and track id (once)."""
        if hasattr(v, "_adas_track"):
            return
        from highway_env.vehicle.behavior import IDMVehicle

        if cls_name is None:
            cls_name = self._class_names[int(self.rng.choice(len(self._class_names), p=self._class_p))]
        spec = self.config.vehicle_classes[cls_name]  # type: ignore[index]
        length = float(self.rng.uniform(*spec.length_m))
        width = float(self.rng.uniform(*spec.width_m))
        colors = self.config.vehicle_colors
        v.LENGTH = length
        v.WIDTH = width
        v.diagonal = math.hypot(length, width)
        v.color = tuple(colors[int(self.rng.integers(len(colors)))])
        v.check_collisions = False
        if isinstance(v, IDMVehicle):
            # IDM gaps are centre to centre: leave room for this vehicle's half length plus a truck's.
            v.DISTANCE_WANTED = length / 2 + 6.0
            if self.dc.time_wanted_s is not None:
                v.TIME_WANTED = self.dc.time_wanted_s
        v._adas_track = self._next_track
        v._adas_class = cls_name
        v._adas_ego = is_ego
        self._next_track += 1

    def _lanes(self) -> list[tuple[str, str, int]]:
        g = self.u.road.network.graph
        return [(a, b, i) for a in g for b in g[a] for i in range(len(g[a][b]))]

    def _densify(self, n: int, outside_view: bool = False, tries: int = 60) -> int:
        """Add up to ``n`` traffic vehicles on random lane points near the view, clear of the others.

        ``outside_view``: only in a band just outside the view, on lanes heading into it.
        """
        if n <= 0:
            return 0
        from highway_env import utils

        road = self.u.road
        vtype = utils.class_from_path(self.u.config["other_vehicles_type"])
        lanes = self._lanes()
        wx0, wx1, wy0, wy1 = self._window()
        mx0, mx1, my0, my1 = self._window(margin_x=25.0, margin_y=12.0)
        centre = np.array([(wx0 + wx1) / 2, (wy0 + wy1) / 2])
        added = 0
        for _ in range(tries * n):
            if added >= n:
                break
            li = lanes[int(self.rng.integers(len(lanes)))]
            lane = road.network.get_lane(li)
            if lane.length < 4.0:
                continue
            s = float(self.rng.uniform(1.0, lane.length - 1.0))
            pos = lane.position(s, 0)
            if not (mx0 <= pos[0] <= mx1 and my0 <= pos[1] <= my1):
                continue
            if outside_view:
                inside = wx0 <= pos[0] <= wx1 and wy0 <= pos[1] <= wy1
                h = lane.heading_at(s)
                heading_in = np.cos(h) * (centre[0] - pos[0]) + np.sin(h) * (centre[1] - pos[1]) > 0
                if inside or not heading_in:
                    continue
            cls_name = self._class_names[int(self.rng.choice(len(self._class_names), p=self._class_p))]
            length = self.config.vehicle_classes[cls_name].length_m[1]  # type: ignore[index]
            if any(np.linalg.norm(pos - o.position) < (length + o.LENGTH) / 2 + 2.5 for o in road.vehicles):
                continue
            speed = float(lane.speed_limit * self.rng.uniform(0.55, 0.85))
            v = vtype.make_on_lane(road, li, longitudinal=s, speed=speed)
            if self.sc.destinations:
                v.plan_route_to(self.sc.destinations[int(self.rng.integers(len(self.sc.destinations)))])
            v.randomize_behavior()
            self._equip(v, cls_name=cls_name)
            road.vehicles.append(v)
            added += 1
        return added

    def _resolve_overlaps(self) -> None:
        """Push vehicles forward along their lane so that resized vehicles do not start overlapping."""
        road = self.u.road
        by_lane: dict[Any, list[Any]] = {}
        for v in road.vehicles:
            by_lane.setdefault(v.lane_index, []).append(v)
        for lane_index, vehicles in by_lane.items():
            lane = road.network.get_lane(lane_index)
            coords = sorted(((*lane.local_coordinates(v.position), v) for v in vehicles), key=lambda t: t[0])
            prev_s, prev_len = -math.inf, 0.0
            for s, r, v in coords:
                s_new = max(s, prev_s + (prev_len + v.LENGTH) / 2 + 1.5)
                if s_new != s:
                    v.position = np.asarray(lane.position(s_new, r), dtype=float)
                prev_s, prev_len = s_new, v.LENGTH

    # -- stepping and rendering ------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return self._substeps / self.sc.simulation_frequency

    def advance(self, seconds: float) -> None:
        f = self.sc.simulation_frequency
        n = round(seconds * f)
        spawn_period = round(self.sc.spawn_every_s * f) if self.sc.spawn_every_s else 0
        road = self.u.road
        for _ in range(n):
            road.act()
            road.step(1.0 / f)
            self._substeps += 1
            if self.sc.cull_distance_m and self._substeps % f == 0:
                ego = self.u.vehicle
                road.vehicles = [
                    v
                    for v in road.vehicles
                    if v is ego or np.linalg.norm(v.position - ego.position) <= self.sc.cull_distance_m
                ]
            if self.dc.target_visible is not None and self._substeps % f == 0:
                missing = self.dc.target_visible - self._visible_count()
                if missing > 0:
                    self._densify(min(missing, 3), outside_view=True, tries=20)
            if spawn_period and self._substeps % spawn_period == 0 and hasattr(self.u, "_spawn_vehicle"):
                # intersection-v0's own traffic renewal, as its step() would do once per policy step.
                self.u._clear_vehicles()
                self.u._spawn_vehicle(spawn_probability=self.u.config["spawn_probability"])
                road = self.u.road
                for v in road.vehicles:
                    self._equip(v)

    def _draw(self) -> tuple[np.ndarray, Image.Image]:
        """The frame highway-env's ``env.render()`` returns, and the same pixels as a PIL image.

        After the first frame (which creates the viewer) the offscreen surface is drawn by the
        viewer as ``env.render()`` does, then read once as RGB bytes: ``get_image``'s
        ``surfarray.array3d`` + transpose, then PIL's copy of that non-contiguous array, cost two
        copies per frame; the pixels are the same (tested).
        """
        viewer = self.u.viewer
        if viewer is None or not viewer.offscreen:
            full = self.env.render()
            assert full is not None
            return full, Image.fromarray(full)
        import pygame

        self.u.enable_auto_render = True
        viewer.display()
        surface = viewer.sim_surface
        size = surface.get_size()
        data = pygame.image.tobytes(surface, "RGB")
        full = np.frombuffer(data, np.uint8).reshape(size[1], size[0], 3)
        return full, Image.frombytes("RGB", size, data)

    def render(self) -> RenderedFrame:
        for v in self.u.road.vehicles:
            self._equip(v)  # no-op unless some env hook added a vehicle we have not seen yet
        full, pil = self._draw()
        surf = self.u.viewer.sim_surface
        cfg = self.config.frame
        sx, sy = cfg.width / cfg.render_width, cfg.height / cfg.render_height
        small = np.asarray(pil.resize((cfg.width, cfg.height), Image.Resampling.BILINEAR))
        boxes: list[Box] = []
        for v in self.u.road.vehicles:
            if not surf.is_visible(v.position):  # highway-env does not draw these
                continue
            px = _drawn_corners(v, surf)
            x0, y0 = px.min(axis=0)
            x1, y1 = px.max(axis=0)
            bx0, by0, bx1, by1 = x0 * sx, y0 * sy, x1 * sx, y1 * sy
            full_area = (bx1 - bx0) * (by1 - by0)
            cx0, cy0 = max(bx0, 0.0), max(by0, 0.0)
            cx1, cy1 = min(bx1, float(cfg.width)), min(by1, float(cfg.height))
            w, h = cx1 - cx0, cy1 - cy0
            if w < self.config.boxes.min_size_px or h < self.config.boxes.min_size_px:
                continue
            if w * h < self.config.boxes.min_visible_fraction * full_area:
                continue
            boxes.append(
                Box(
                    category_id=CATEGORY_IDS[v._adas_class],
                    bbox=(round(cx0, 2), round(cy0, 2), round(w, 2), round(h, 2)),
                    track_id=int(v._adas_track),
                    is_ego=bool(v._adas_ego),
                )
            )
        return RenderedFrame(render_image=full, image=small, boxes=boxes)

    def render_background(self) -> np.ndarray:
        """The same view with every vehicle removed (for checking that boxes sit on vehicles)."""
        road = self.u.road
        saved = road.vehicles
        road.vehicles = []
        try:
            img = self.env.render()
        finally:
            road.vehicles = saved
        assert img is not None
        return img

    def close(self) -> None:
        self.env.close()
