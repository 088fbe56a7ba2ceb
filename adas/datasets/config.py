"""``config/datagen.yaml``: what the demo-data generator simulates, validated with pydantic.

The dataset tag hashes this configuration, so identical settings always name the same dataset.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from adas.config_errors import load_yaml_model
from adas.datasets.coco import GOLDEN_SPLITS

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
