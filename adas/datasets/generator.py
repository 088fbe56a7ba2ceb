"""Deterministic demo-data generator on the highway-env simulator.

Each scene is one highway-env episode (its own seed) driven by the simulator's own traffic models;
frames are rendered top-down at ``frame.render_*``, ground-truth boxes come from the vehicle
polygons through the viewer's world-to-pixel transform, the frame is downscaled to the saved size
and a weather/lighting transform plus sensor noise is applied. Scenes are generated in worker
processes and assembled into COCO manifests in plan order, so the output depends only on
(config, size), never on scheduling.

Choices made to keep the domain from being trivially easy (see docs and config/datagen.yaml):
small objects (downscaled frames), three classes told apart by size only (shared colour palette,
some colours close to the road grey), dense traffic, heavy weather, a held-out scenario.

Modelling choices that differ from stock highway-env, each for a stated reason:
  - the ego is an IDM/MOBIL vehicle like the others: a scripted "IDLE" ego rear-ends traffic
    within seconds and the rest of the scene is a frozen pile-up;
  - collision checks are off for every vehicle: crashed vehicles stop forever, which again yields
    degenerate scenes; IDM keeps distances, and rare overlaps are acceptable in a perception set;
  - per-vehicle LENGTH/WIDTH (class sizes) are instance attributes set after reset; the renderer
    and ``polygon()`` both read them, and DISTANCE_WANTED is set per vehicle because IDM measures
    gaps centre to centre (its default assumes 5 m cars, which would make trucks overlap).

Every vehicle visible in a frame is annotated, the ego included (``is_ego: true``): a detector sees
the ego like any other vehicle, and consumers that must exclude it (the closed-loop controller) can
use the flag or its fixed position in the frame.

Domain code: no dagster import here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing as mp
import os
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import numpy as np
from PIL import Image, ImageDraw
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from adas.config_errors import load_yaml_model
from adas.datasets.coco import (
    CATEGORIES,
    CATEGORY_IDS,
    DATASET_META_FILE,
    GOLDEN_SPLITS,
    REPLAY_SPLIT,
    image_file_name,
    split_file,
    write_coco,
    write_json_atomic,
)
from adas.datasets.slices import DEFAULT_SLICES_PATH, SliceCatalog, load_slices
from adas.datasets.weather import apply_weather

logger = logging.getLogger(__name__)

GENERATOR_VERSION: Final[str] = "1"
DEFAULT_CONFIG_PATH: Final[Path] = Path(__file__).resolve().parents[2] / "config" / "datagen.yaml"

Scenario = Literal["highway", "merge", "intersection", "roundabout"]
Density = Literal["sparse", "dense"]
Weather = Literal["clear", "fog", "rain", "snow"]
Lighting = Literal["day", "night", "glare"]
GoldenSplit = Literal["golden_train", "golden_val", "golden_test"]
VehicleClass = Literal["car", "truck", "motorcycle"]
Severity = Annotated[int, Field(ge=1, le=5)]
Channel = Annotated[int, Field(ge=0, le=255)]


# ==================================================================================================
# Configuration


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(value: tuple[float, float], name: str) -> None:
    if value[0] > value[1]:
        raise ValueError(f"{name}: lower bound {value[0]} is above upper bound {value[1]}")


class FrameConfig(_Strict):
    render_height: PositiveInt
    render_width: PositiveInt
    scaling_px_per_m: PositiveFloat
    height: PositiveInt
    width: PositiveInt

    @model_validator(mode="after")
    def _downscale_only(self) -> FrameConfig:
        if self.height > self.render_height or self.width > self.render_width:
            raise ValueError("saved frame (height, width) must not exceed the render size")
        return self


class SizeConfig(_Strict):
    golden_train: NonNegativeInt
    golden_val: NonNegativeInt
    golden_test: NonNegativeInt
    replay_sequences: NonNegativeInt
    replay_frames: PositiveInt


class GoldenConfig(_Strict):
    frames_per_scene: PositiveInt
    frame_interval_s: PositiveFloat
    warmup_s: tuple[float, float]

    @model_validator(mode="after")
    def _ranges(self) -> GoldenConfig:
        _check_range(self.warmup_s, "warmup_s")
        return self


class Condition(_Strict):
    weather: Weather
    lighting: Lighting


class WeightedCondition(Condition):
    weight: PositiveFloat


class ReplayConfig(_Strict):
    frame_interval_s: PositiveFloat
    warmup_s: tuple[float, float]
    conditions: list[Condition] = Field(min_length=1)
    scenarios: dict[Scenario, PositiveFloat] = Field(min_length=1)

    @model_validator(mode="after")
    def _ranges(self) -> ReplayConfig:
        _check_range(self.warmup_s, "warmup_s")
        return self


class DensityConfig(_Strict):
    env_config: dict[str, int | float | str | bool] = Field(default_factory=dict)
    # Vehicles added at reset inside (and around) the view: the stock scenes spread their few
    # vehicles over the whole map, most of them never in the frame.
    extra_vehicles: NonNegativeInt = 0
    # Once per simulated second, spawn vehicles just outside the view, heading in, until this many
    # are within the view (never inside it, so nothing pops into a frame).
    target_visible: NonNegativeInt | None = None
    time_wanted_s: PositiveFloat | None = None


class ScenarioConfig(_Strict):
    env_id: str
    simulation_frequency: PositiveInt
    centering_position: tuple[float, float]
    spawn_every_s: PositiveFloat | None = None
    cull_distance_m: PositiveFloat | None = None
    destinations: list[str] = Field(default_factory=list)
    # Optional own ego start (lane from, to, index): lets the ego drive along the frame's long axis.
    ego_lane: tuple[str, str, int] | None = None
    ego_longitudinal_m: tuple[float, float] = (0.0, 0.0)
    ego_speed_mps: PositiveFloat | None = None
    ego_destinations: list[str] = Field(default_factory=list)
    densities: dict[Density, DensityConfig]

    @model_validator(mode="after")
    def _both_densities(self) -> ScenarioConfig:
        missing = [d for d in ("sparse", "dense") if d not in self.densities]
        if missing:
            raise ValueError(f"densities: missing {', '.join(missing)}")
        return self


class VehicleClassConfig(_Strict):
    proportion: PositiveFloat
    length_m: tuple[PositiveFloat, PositiveFloat]
    width_m: tuple[PositiveFloat, PositiveFloat]

    @model_validator(mode="after")
    def _ranges(self) -> VehicleClassConfig:
        _check_range(self.length_m, "length_m")
        _check_range(self.width_m, "width_m")
        return self


class SensorNoiseConfig(_Strict):
    sigma: float = Field(ge=0, le=0.2)
    blur_sigma_px: float = Field(ge=0, le=3)


class BoxConfig(_Strict):
    min_size_px: float = Field(ge=0)
    min_visible_fraction: float = Field(gt=0, le=1)


class DatagenConfig(_Strict):
    version: Literal[1]
    seed: NonNegativeInt
    frame: FrameConfig
    sizes: dict[str, SizeConfig] = Field(min_length=1)
    golden: GoldenConfig
    replay: ReplayConfig
    split_scenarios: dict[GoldenSplit, dict[Scenario, PositiveFloat]]
    held_out_scenarios: list[Scenario] = Field(default_factory=list)
    density_mix: dict[Density, PositiveFloat] = Field(min_length=1)
    conditions: list[WeightedCondition] = Field(min_length=1)
    severities: list[Severity] = Field(min_length=1)
    sensor_noise: SensorNoiseConfig
    scenarios: dict[Scenario, ScenarioConfig]
    vehicle_classes: dict[VehicleClass, VehicleClassConfig]
    vehicle_colors: list[tuple[Channel, Channel, Channel]] = Field(min_length=1)
    boxes: BoxConfig

    @model_validator(mode="after")
    def _consistent(self) -> DatagenConfig:
        missing_splits = [s for s in GOLDEN_SPLITS if s not in self.split_scenarios]
        if missing_splits:
            raise ValueError(f"split_scenarios: missing {', '.join(missing_splits)}")
        used = {s for w in self.split_scenarios.values() for s in w} | set(self.replay.scenarios)
        unconfigured = sorted(used - set(self.scenarios))
        if unconfigured:
            raise ValueError(f"scenarios: no entry for {', '.join(unconfigured)} (used in a scenario mix)")
        for split in ("golden_train", "golden_val"):
            leaked = sorted(set(self.held_out_scenarios) & set(self.split_scenarios[split]))
            if leaked:
                raise ValueError(
                    f"split_scenarios.{split}: held-out scenario(s) {', '.join(leaked)} must not appear"
                )
        return self


def load_datagen_config(path: Path | str = DEFAULT_CONFIG_PATH) -> DatagenConfig:
    """Load and validate config/datagen.yaml; raises ConfigError naming the file and the field."""
    return load_yaml_model(Path(path), DatagenConfig)


def config_hash(config: DatagenConfig) -> str:
    """sha256 of the canonical JSON of the config (sorted keys, no whitespace)."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def dataset_tag(config: DatagenConfig, size: str) -> str:
    return f"sim-{size}-{config.seed}-{config_hash(config)[:8]}"


# ==================================================================================================
# Scene plan (main process, deterministic)


@dataclass(frozen=True)
class SceneSpec:
    split: str
    scene_index: int
    scene_id: str
    scenario: str
    density: str
    weather: str
    lighting: str
    severity: int
    n_frames: int
    frame_interval_s: float
    warmup_s: float
    env_seed: int


def _allocate(weights: dict[str, float], n: int) -> list[str]:
    """Exactly ``n`` labels in proportion to ``weights`` (largest remainder, ties by order)."""
    if n <= 0:
        return []
    total = sum(weights.values())
    quotas = {k: n * w / total for k, w in weights.items()}
    counts = {k: math.floor(q) for k, q in quotas.items()}
    order = sorted(weights, key=lambda k: (-(quotas[k] - counts[k]), list(weights).index(k)))
    for k in order[: n - sum(counts.values())]:
        counts[k] += 1
    return [k for k in weights for _ in range(counts[k])]


def _env_seed(seed: int, scene_index: int) -> int:
    return int(np.random.SeedSequence([seed, scene_index]).generate_state(1)[0])


def plan_scenes(config: DatagenConfig, size: str) -> list[SceneSpec]:
    """Every scene of the dataset with its split, scenario, density, condition and seed."""
    if size not in config.sizes:
        raise ValueError(f"unknown size {size!r}; config defines: {', '.join(config.sizes)}")
    sizes = config.sizes[size]
    rng = np.random.default_rng([config.seed, 0])
    specs: list[SceneSpec] = []
    scene_index = 1
    cond_weights = {f"{c.weather}/{c.lighting}": c.weight for c in config.conditions}

    def add(
        split: str,
        scenarios: list[str],
        densities: list[str],
        conditions: list[str],
        frames: list[int],
        interval: float,
        warmup: tuple[float, float],
    ) -> None:
        nonlocal scene_index
        for scenario, density, cond, n_frames in zip(scenarios, densities, conditions, frames, strict=True):
            weather, lighting = cond.split("/")
            severity = 0 if cond == "clear/day" else int(rng.choice(config.severities))
            if weather != "clear" and lighting != "day":
                # Two stacked adverse conditions at full severity leave nothing visible at all.
                severity = max(1, severity - 1)
            specs.append(
                SceneSpec(
                    split=split,
                    scene_index=scene_index,
                    scene_id=f"{scenario}-s{scene_index:04d}",
                    scenario=scenario,
                    density=density,
                    weather=weather,
                    lighting=lighting,
                    severity=severity,
                    n_frames=n_frames,
                    frame_interval_s=interval,
                    warmup_s=round(float(rng.uniform(*warmup)), 3),
                    env_seed=_env_seed(config.seed, scene_index),
                )
            )
            scene_index += 1

    for split in GOLDEN_SPLITS:
        total = getattr(sizes, split)
        per = config.golden.frames_per_scene
        n_scenes = math.ceil(total / per)
        frames = [per] * n_scenes
        if n_scenes and total % per:
            frames[-1] = total % per
        scenarios, densities = _scenarios_and_densities(config.split_scenarios[split], config, n_scenes, rng)
        conditions = [str(c) for c in rng.permutation(_allocate(cond_weights, n_scenes))]
        add(
            split,
            scenarios,
            densities,
            conditions,
            frames,
            config.golden.frame_interval_s,
            config.golden.warmup_s,
        )

    n_seq = sizes.replay_sequences
    scenarios, densities = _scenarios_and_densities(config.replay.scenarios, config, n_seq, rng)
    conditions = [
        f"{c.weather}/{c.lighting}"
        for c in (config.replay.conditions[i % len(config.replay.conditions)] for i in range(n_seq))
    ]
    add(
        REPLAY_SPLIT,
        scenarios,
        densities,
        conditions,
        [sizes.replay_frames] * n_seq,
        config.replay.frame_interval_s,
        config.replay.warmup_s,
    )
    return specs


def _scenarios_and_densities(
    weights: dict[str, float], config: DatagenConfig, n: int, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    # Densities are dealt round-robin (smooth weighted) over the scenes grouped by scenario, so each
    # scenario gets both densities in proportion and the overall mix is exact.
    scenarios = _allocate(weights, n)
    mix = dict(config.density_mix)
    total = sum(mix.values())
    credit = dict.fromkeys(mix, 0.0)
    densities: list[str] = []
    for _ in range(n):
        for d in mix:
            credit[d] += mix[d] / total
        pick = max(mix, key=lambda d: credit[d])
        credit[pick] -= 1.0
        densities.append(pick)
    order = rng.permutation(n)
    return [scenarios[i] for i in order], [densities[i] for i in order]


# ==================================================================================================
# Simulation (worker side): highway-env is imported lazily so that importing this module (from the
# Dagster code location, or a spawned worker unpickling a task) stays cheap and headless-safe.

_CLASS_DEFAULTS: dict[type, dict[str, Any]] = {}


def _import_simulator() -> None:
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
        _import_simulator()
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

    def render(self) -> RenderedFrame:
        for v in self.u.road.vehicles:
            self._equip(v)  # no-op unless some env hook added a vehicle we have not seen yet
        full = self.env.render()
        assert full is not None
        surf = self.u.viewer.sim_surface
        cfg = self.config.frame
        sx, sy = cfg.width / cfg.render_width, cfg.height / cfg.render_height
        small = np.asarray(Image.fromarray(full).resize((cfg.width, cfg.height), Image.Resampling.BILINEAR))
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


# ==================================================================================================
# Worker


@dataclass(frozen=True)
class FrameResult:
    frame_index: int
    timestamp_s: float
    file_name: str
    boxes: list[Box]


@dataclass(frozen=True)
class SceneResult:
    spec: SceneSpec
    frames: list[FrameResult]
    seconds: float
    cpu_seconds: float


_WORKER_STATE: dict[str, Any] = {}


def _init_worker(config: DatagenConfig, out_dir: str) -> None:
    _import_simulator()
    _WORKER_STATE["config"] = config
    _WORKER_STATE["out_dir"] = Path(out_dir)


def _run_scene_task(spec: SceneSpec) -> SceneResult:
    return run_scene(_WORKER_STATE["config"], spec, _WORKER_STATE["out_dir"])


def run_scene(config: DatagenConfig, spec: SceneSpec, out_dir: Path) -> SceneResult:
    """Simulate one scene, write its PNG frames under ``out_dir`` and return its annotations."""
    t0, c0 = time.perf_counter(), time.process_time()
    rng = np.random.default_rng([config.seed, spec.scene_index, 1])
    sim = SceneSimulator(config, spec.scenario, spec.density, spec.env_seed, rng)
    frames: list[FrameResult] = []
    try:
        sim.advance(spec.warmup_s)
        start = sim.time_s
        for k in range(spec.n_frames):
            if k:
                sim.advance(spec.frame_interval_s)
            rendered = sim.render()
            frame_rng = np.random.default_rng([config.seed, spec.scene_index, 2, k])
            # Same layout seed for every frame of the scene: fog banks and glare spots stay put.
            layout_rng = np.random.default_rng([config.seed, spec.scene_index, 3])
            img = apply_weather(
                rendered.image,
                spec.weather,
                spec.lighting,
                frame_rng,
                severity=spec.severity or 1,
                layout_rng=layout_rng,
                noise_sigma=config.sensor_noise.sigma,
                blur_sigma=config.sensor_noise.blur_sigma_px,
            )
            name = image_file_name(spec.split, spec.scene_id, k)
            path = out_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # Level 1: noisy frames barely compress anyway, and level 6 costs ~7 ms a frame.
            Image.fromarray(img).save(path, format="PNG", compress_level=1)
            frames.append(FrameResult(k, round(sim.time_s - start, 3), name, rendered.boxes))
    finally:
        sim.close()
    return SceneResult(
        spec=spec, frames=frames, seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0
    )


# Rough relative cost per simulated second, for longest-first scheduling over the workers.
_COST: Final[dict[tuple[str, str], float]] = {
    ("highway", "sparse"): 0.5,
    ("highway", "dense"): 1.5,
    ("merge", "sparse"): 0.3,
    ("merge", "dense"): 0.8,
    ("intersection", "sparse"): 0.8,
    ("intersection", "dense"): 1.5,
    ("roundabout", "sparse"): 0.5,
    ("roundabout", "dense"): 1.2,
}


def _estimated_cost(spec: SceneSpec) -> float:
    sim_s = spec.warmup_s + spec.n_frames * spec.frame_interval_s
    return 1.0 + sim_s * _COST.get((spec.scenario, spec.density), 1.0)


# ==================================================================================================
# Orchestration


class DatasetSummary(BaseModel):
    tag: str
    out_dir: str
    size: str
    seed: int
    config_hash: str
    counts: dict[str, int]
    annotation_counts: dict[str, int]
    per_slice_counts: dict[str, dict[str, int]]
    n_scenes: int
    n_sequences: int
    workers: int
    seconds: float
    frames_per_s: float
    # CPU time spent inside scene simulation over all workers: wall-clock on an otherwise idle
    # machine is about cpu_seconds / workers (+ ~2 s start-up), whatever else shares the cores.
    cpu_seconds: float


def generate_dataset(
    out_dir: Path,
    config: DatagenConfig,
    size: str = "demo",
    workers: int = 2,
    progress: Callable[[str], None] | None = None,
    slices: SliceCatalog | None = None,
) -> DatasetSummary:
    """Generate the dataset into ``out_dir`` (its ``images/`` folder is replaced) and summarise it.

    ``workers <= 1`` runs in this process (sets SDL_VIDEODRIVER=offscreen here).
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    specs = plan_scenes(config, size)
    tag = dataset_tag(config, size)
    chash = config_hash(config)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Stale frames of an earlier run must not survive next to the new manifests.
    shutil.rmtree(out_dir / "images", ignore_errors=True)

    def report(msg: str) -> None:
        logger.info(msg)
        if progress is not None:
            progress(msg)

    n_frames_total = sum(s.n_frames for s in specs)
    report(f"datagen {tag}: {len(specs)} scenes, {n_frames_total} frames, {workers} worker(s)")
    order = sorted(specs, key=_estimated_cost, reverse=True)
    results: dict[int, SceneResult] = {}
    every = max(1, len(specs) // 20)
    done_frames = 0

    def collect(res_iter: Iterable[SceneResult]) -> None:
        nonlocal done_frames
        for res in res_iter:
            results[res.spec.scene_index] = res
            done_frames += len(res.frames)
            i = len(results)
            if i % every == 0 or i == len(specs):
                el = time.perf_counter() - t0
                report(
                    f"scene {i}/{len(specs)}: {done_frames}/{n_frames_total} frames, "
                    f"{done_frames / max(el, 1e-9):.1f} frames/s"
                )

    if workers <= 1:
        _init_worker(config, str(out_dir))
        collect(run_scene(config, s, out_dir) for s in order)
    else:
        ctx = mp.get_context("spawn")  # fork would copy pygame/SDL state; spawn starts clean workers
        with ctx.Pool(workers, initializer=_init_worker, initargs=(config, str(out_dir))) as pool:
            collect(pool.imap_unordered(_run_scene_task, order, chunksize=1))

    manifests = _assemble(config, specs, results, tag, chash)
    for split, data in manifests.items():
        write_coco(split_file(out_dir, split), data)

    if slices is None and DEFAULT_SLICES_PATH.is_file():
        slices = load_slices(DEFAULT_SLICES_PATH)
    per_slice = {split: slices.counts(data) for split, data in manifests.items()} if slices else {}
    counts = {split: len(data["images"]) for split, data in manifests.items()}
    ann_counts = {split: len(data["annotations"]) for split, data in manifests.items()}
    seconds = time.perf_counter() - t0
    meta = {
        "tag": tag,
        "seed": config.seed,
        "size": size,
        "generator_version": GENERATOR_VERSION,
        "config_hash": chash,
        "frame_size": [config.frame.height, config.frame.width],
        "categories": CATEGORIES,
        "counts": counts,
        "annotation_counts": ann_counts,
        "per_slice_counts": per_slice,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomic(out_dir / DATASET_META_FILE, meta)
    summary = DatasetSummary(
        tag=tag,
        out_dir=str(out_dir),
        size=size,
        seed=config.seed,
        config_hash=chash,
        counts=counts,
        annotation_counts=ann_counts,
        per_slice_counts=per_slice,
        n_scenes=len(specs),
        n_sequences=sum(1 for s in specs if s.split == REPLAY_SPLIT),
        workers=workers,
        seconds=round(seconds, 2),
        frames_per_s=round(n_frames_total / seconds, 2),
        cpu_seconds=round(sum(r.cpu_seconds for r in results.values()), 2),
    )
    report(
        f"datagen {tag}: done in {seconds:.1f} s ({summary.frames_per_s:.1f} frames/s, "
        f"{summary.cpu_seconds:.0f} CPU-s in scenes)"
    )
    return summary


def _assemble(
    config: DatagenConfig, specs: Sequence[SceneSpec], results: dict[int, SceneResult], tag: str, chash: str
) -> dict[str, dict[str, Any]]:
    """COCO dicts in plan order: ids are independent of which worker finished first."""
    manifests: dict[str, dict[str, Any]] = {}
    for split in (*GOLDEN_SPLITS, REPLAY_SPLIT):
        manifests[split] = {
            "info": {
                "description": f"simulated top-down ADAS frames ({split})",
                "tag": tag,
                "split": split,
                "seed": config.seed,
                "config_hash": chash,
                "generator_version": GENERATOR_VERSION,
            },
            "images": [],
            "annotations": [],
            "categories": CATEGORIES,
        }
    manifests[REPLAY_SPLIT]["sequences"] = []
    image_id = 1
    ann_id = 1
    for spec in specs:
        res = results[spec.scene_index]
        data = manifests[spec.split]
        ids: list[int] = []
        for fr in res.frames:
            data["images"].append(
                {
                    "id": image_id,
                    "file_name": fr.file_name,
                    "width": config.frame.width,
                    "height": config.frame.height,
                    "scene_id": spec.scene_id,
                    "frame_index": fr.frame_index,
                    "timestamp_s": fr.timestamp_s,
                    "scenario": spec.scenario,
                    "density": spec.density,
                    "weather": spec.weather,
                    "lighting": spec.lighting,
                    "split": spec.split,
                    "severity": spec.severity,
                }
            )
            for b in fr.boxes:
                x, y, w, h = b.bbox
                data["annotations"].append(
                    {
                        "id": ann_id,
                        "image_id": image_id,
                        "category_id": b.category_id,
                        "bbox": [x, y, w, h],
                        "area": round(w * h, 3),
                        "iscrowd": 0,
                        "track_id": b.track_id,
                        "is_ego": b.is_ego,
                    }
                )
                ann_id += 1
            ids.append(image_id)
            image_id += 1
        if spec.split == REPLAY_SPLIT:
            data["sequences"].append(
                {
                    "sequence_id": f"seq{len(data['sequences']):02d}-{spec.scene_id}",
                    "scene_id": spec.scene_id,
                    "image_ids": ids,
                    "fps": round(1.0 / spec.frame_interval_s, 3),
                    "scenario": spec.scenario,
                    "weather": spec.weather,
                    "lighting": spec.lighting,
                }
            )
    return manifests


# ==================================================================================================
# Visual check: one frame per scenario with its boxes, and one frame under every condition

_BOX_COLORS: Final[dict[int, tuple[int, int, int]]] = {1: (0, 255, 0), 2: (255, 40, 40), 3: (255, 230, 0)}


def draw_boxes(img: np.ndarray, boxes: Sequence[Box], scale: int = 2) -> Image.Image:
    """Upscale (nearest) and outline each box in its class colour: car green, truck red, motorcycle yellow."""
    pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pil)
    for b in boxes:
        x, y, w, h = (c * scale for c in b.bbox)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=_BOX_COLORS.get(b.category_id, (255, 255, 255)))
    return pil


def render_box_overlay(path: Path, config: DatagenConfig, seed: int | None = None, severity: int = 3) -> Path:
    """Write a PNG: a dense frame of each scenario with GT boxes, then one frame under each condition."""
    seed = config.seed if seed is None else seed
    rows: list[tuple[str, Image.Image]] = []
    highway: RenderedFrame | None = None
    for i, scenario in enumerate(config.scenarios):
        rng = np.random.default_rng([seed, 900 + i])
        sim = SceneSimulator(config, scenario, "dense", _env_seed(seed, 900 + i), rng)
        try:
            sim.advance(3.0)
            fr = sim.render()
        finally:
            sim.close()
        if highway is None:
            highway = fr
        rows.append((f"{scenario} (dense, clean)", draw_boxes(fr.image, fr.boxes)))
    assert highway is not None
    conditions = [
        ("clear", "day"),
        ("fog", "day"),
        ("rain", "day"),
        ("snow", "day"),
        ("clear", "night"),
        ("clear", "glare"),
    ]
    for weather, lighting in conditions:
        img = apply_weather(
            highway.image,
            weather,
            lighting,
            np.random.default_rng([seed, 1]),
            severity,
            noise_sigma=config.sensor_noise.sigma,
            blur_sigma=config.sensor_noise.blur_sigma_px,
        )
        rows.append((f"{weather}/{lighting} severity {severity}", draw_boxes(img, highway.boxes)))
    label_h = 14
    width = max(im.width for _, im in rows)
    canvas = Image.new("RGB", (width, sum(im.height + label_h for _, im in rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, im in rows:
        draw.text((4, y + 1), label, fill=(0, 0, 0))
        canvas.paste(im, (0, y + label_h))
        y += im.height + label_h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
