"""``config/simulation.yaml``: replay thresholds, closed-loop categories, sweeps, controller and gate.

Validated by pydantic; a malformed file fails with the file and the field named
(``adas.config_errors.load_yaml_model``). Domain code: no dagster import.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, model_validator

from adas.config_errors import load_yaml_model
from adas.settings import CONFIG_DIR

SIMULATION_FILE: Final[Path] = CONFIG_DIR / "simulation.yaml"
# The scenes the gate plays as OpenSCENARIO files (``EpisodeSpec.xosc`` of a category's runs).
SCENARIOS_DIR: Final[Path] = CONFIG_DIR / "scenarios"
# Looks of a sequential sweep (the O'Brien-Fleming constants in ``sequential`` go this far).
MAX_LOOKS: Final[int] = 10

Category = Literal["cruise", "cut_in", "stopped_lead", "merge"]
CATEGORIES: Final[tuple[str, ...]] = ("cruise", "cut_in", "stopped_lead", "merge")
ActorType = Literal["car", "truck", "motorcycle"]
Density = Literal["sparse", "dense"]
Severity = Annotated[int, Field(ge=1, le=5)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReplayConfig(_Strict):
    """Open-loop replay: matching, tracking, segmenting and what counts as divergence."""

    match_iou: float = Field(0.5, gt=0, le=1, description="IoU for a detection to match a ground-truth box")
    tracker_iou: float = Field(0.3, gt=0, le=1, description="IoU linking a detection to a track")
    tracker_max_age: PositiveInt = Field(3, description="frames a track survives without a detection")
    min_ghost_track_frames: PositiveInt = Field(3, description="a ghost track must live this many frames")
    segment_frames: PositiveInt = Field(10, description="frames per segment (2 s at 5 fps)")
    divergence_recall_delta: float = Field(0.15, gt=0, le=1)
    divergence_fp_per_frame_delta: float = Field(1.0, gt=0)
    min_gt_per_segment: PositiveInt = Field(5, description="GT boxes a segment needs to be judged")
    worst_segments: NonNegativeInt = Field(
        2, description="also flag the candidate's N worst segments (lowest recall) for the library"
    )
    max_flagged: PositiveInt = Field(8, description="at most this many flagged segments become scenarios")


class Condition(_Strict):
    weather: Literal["clear", "fog", "rain", "snow"]
    lighting: Literal["day", "night", "glare"] = "day"
    severity: Severity = 3

    @property
    def label(self) -> str:
        return f"{self.weather}/{self.lighting}"


class CategoryConfig(_Strict):
    """A scenario category and its parameter axes (the sweep samples them balanced)."""

    scenario: Literal["highway", "merge"]
    description: str
    duration_s: PositiveFloat = 30.0
    densities: list[Density] = Field(min_length=1)
    ego_speed_mps: list[PositiveFloat] = Field(min_length=1)
    gap_time_s: list[PositiveFloat] = Field(default_factory=lambda: [1.2])
    actor_types: list[ActorType] = Field(default_factory=lambda: ["car"])
    actor_speed_delta_mps: list[float] = Field(
        default_factory=lambda: [5.0], description="cut-in: how much slower than the ego the actor drives"
    )
    conditions: list[Condition] = Field(min_length=1)
    xosc: str = Field(
        description="the OpenSCENARIO file (under config/scenarios/) the player plays for this category's runs, "
        "its parameters set from the run's axes",
    )

    @model_validator(mode="after")
    def _scenario_file_exists(self) -> CategoryConfig:
        if not (SCENARIOS_DIR / self.xosc).is_file():
            raise ValueError(f"xosc: no file {self.xosc} in {SCENARIOS_DIR}")
        return self


class SequentialConfig(_Strict):
    """Group-sequential runs: while the pooled rate comparisons are amber, add a batch of new seeded runs."""

    batch_runs: PositiveInt = Field(
        description="runs per model added at each look (spread over the categories)"
    )
    max_runs: PositiveInt = Field(description="stop adding runs at this many runs per model")


class SweepSize(_Strict):
    """Runs per category for a named sweep size; ``library_runs``: runs taken from the scenario library."""

    runs: dict[Category, NonNegativeInt]
    library_runs: NonNegativeInt = 0
    shards: PositiveInt = 4
    duration_s: PositiveFloat | None = Field(None, description="overrides every category's episode length")
    sequential: SequentialConfig | None = Field(
        None, description="add seeded runs while the collision-rate comparison is amber (None: never)"
    )

    @property
    def planned_runs(self) -> int:
        """Runs per model before any sequential batch (at most: the library may hold fewer runs)."""
        return sum(self.runs.values()) + self.library_runs

    @model_validator(mode="after")
    def _sequential_budget(self) -> SweepSize:
        seq = self.sequential
        if seq is None:
            return self
        if not any(self.runs.values()):
            raise ValueError(
                "sequential: batches are planned per category, and this sweep has no category runs"
            )
        if seq.max_runs <= self.planned_runs:
            raise ValueError(
                f"sequential.max_runs ({seq.max_runs}) must exceed the sweep's {self.planned_runs} runs"
            )
        looks = 1 + -(-(seq.max_runs - self.planned_runs) // seq.batch_runs)
        if looks > MAX_LOOKS:
            raise ValueError(
                f"sequential: {looks} looks (runs {self.planned_runs} to {seq.max_runs} by {seq.batch_runs}); "
                f"at most {MAX_LOOKS} (raise batch_runs)"
            )
        return self


class ControllerConfig(_Strict):
    """IDM longitudinal control on perceived objects; lane keeping on the map; safe lane changes."""

    time_headway_s: PositiveFloat = 1.5
    min_gap_m: PositiveFloat = 3.0
    max_accel_mps2: PositiveFloat = 1.5
    comfortable_decel_mps2: PositiveFloat = 3.0
    max_decel_mps2: PositiveFloat = 8.0
    delta: PositiveFloat = 4.0
    cah_coolness: float = Field(
        0.99,
        ge=0,
        lt=1,
        description="ACC model: weight of the constant-acceleration heuristic (0: plain IDM)",
    )
    path_margin_m: float = Field(0.3, ge=0, description="lateral margin of the ego's path corridor")
    lane_changes: bool = True
    lane_change_cooldown_s: PositiveFloat = 4.0
    lane_change_min_gain_mps: PositiveFloat = 3.0
    lane_change_rear_gap_m: PositiveFloat = 15.0
    lane_change_front_gap_m: PositiveFloat = 25.0
    # Tracker on detections (world frame)
    confirm_hits: PositiveInt = Field(2, description="detections before a track acts on the controller")
    max_coast_s: PositiveFloat = Field(
        1.0, description="a confirmed track is kept this long without detections"
    )
    gate_m: PositiveFloat = Field(4.0, description="association distance (after prediction)")
    velocity_gain: float = Field(0.4, gt=0, le=1, description="alpha-beta filter gain on velocity")
    ego_exclusion_margin_m: float = Field(
        1.0, ge=0, description="a detection on the ego's own footprint is the ego"
    )


class MetricsConfig(_Strict):
    near_miss_ttc_s: PositiveFloat = 1.5
    near_miss_gap_m: PositiveFloat = 2.0
    unsafe_headway_s: PositiveFloat = 0.8
    unsafe_following_min_s: PositiveFloat = 1.0
    hard_brake_mps2: PositiveFloat = 4.0
    blocked_after_s: PositiveFloat = 6.0
    blocked_clear_ahead_m: PositiveFloat = 30.0
    # CARLA leaderboard infraction penalties (multiplicative); off-road counts as leaving the
    # drivable area (CARLA: collision with the static layout), a blocked agent as a timeout.
    penalties: dict[str, Annotated[float, Field(gt=0, le=1)]] = Field(
        default_factory=lambda: {"collision_vehicle": 0.60, "off_road": 0.65, "agent_blocked": 0.70}
    )


Rate = Annotated[float, Field(ge=0, le=1)]


class CategoryCriteria(_Strict):
    """Per category: absolute limits (any breach is red) and guards against production.

    A category holds a handful of runs (2 to 8 in the demo sweep; the Wilson bound of 0/4 is
    49 %), so a comparison with production per category cannot be decided either way at a
    tolerance of a few points. Per category it can therefore only fail: red when the category's
    own interval lies wholly beyond the tolerance (a regression concentrated in one category,
    which the pooled comparison would dilute), otherwise it passes and the pooled ``all`` check
    (``GateConfig``) decides.
    """

    max_collisions: NonNegativeInt | None = Field(
        None, description="absolute: collisions allowed in the absolute conditions, whatever production does"
    )
    absolute_conditions: list[str] | None = Field(
        None,
        description="weather/lighting conditions (e.g. clear/day) where max_collisions applies, as in "
        "NCAP-style scenes; elsewhere max_collision_rate_increase compares with production (None: everywhere)",
    )
    max_off_road: NonNegativeInt | None = None
    max_blocked: NonNegativeInt | None = None
    max_collision_rate_increase: Rate | None = Field(
        None, description="guard: red when the paired collision-rate increase is surely above this"
    )
    max_near_miss_increase_per_run: float | None = Field(
        None, ge=0, description="guard: red when near misses per run surely increase by more"
    )
    max_driving_score_drop: Rate | None = Field(
        None, description="guard: red when the mean driving score surely drops by more"
    )


class GateConfig(_Strict):
    """The sim gate. Comparisons with production are paired on shared seeds and three-valued
    (``adas.stats.decide``): red when the interval is wholly beyond the tolerance, green when it
    rules the tolerance out, amber otherwise."""

    categories: dict[Category, CategoryCriteria]
    max_collision_rate_increase: Rate = Field(
        0.05, description="all runs: candidate - production collision rate (Newcombe paired interval)"
    )
    max_failure_rate_increase: Rate = Field(
        0.05, description="all runs: the same for a failure (collision, off road or blocked)"
    )
    max_near_miss_increase_per_run: float = Field(
        0.1, ge=0, description="all runs: mean paired increase of near misses per run (bootstrap)"
    )
    max_vru_near_miss_increase_per_run: float = Field(
        0.0, ge=0, description="the same for near misses with motorcycles"
    )
    max_min_ttc_drop_s: float | None = Field(
        0.25, ge=0, description="all runs: median paired drop of the minimum TTC (None: reported, not gated)"
    )
    min_ttc_cap_s: PositiveFloat = Field(
        6.0, description="minimum TTCs above this are capped before differencing (no conflict there)"
    )
    max_driving_score_drop: Rate = Field(0.05, description="all runs: mean paired drop of the driving score")
    max_p95_jerk_increase_pct: float = Field(
        25.0, ge=0, description="all runs: mean paired increase of the p95 |jerk|, in % of production's"
    )
    min_runs: PositiveInt = Field(4, description="a sweep with fewer runs cannot be green")
    bootstrap_resamples: PositiveInt = Field(2000, description="resamples of the paired per-run differences")


class ClipConfig(_Strict):
    seconds: PositiveFloat = Field(6.0, description="the last seconds before the failure")
    scale: PositiveInt = 2
    fps: PositiveInt = 5
    frame_step: PositiveInt = Field(2, description="keep every n-th frame (GIF size)")
    colors: int = Field(24, ge=2, le=256)


class SimulationConfig(_Strict):
    version: Literal[2]
    seed: NonNegativeInt
    policy_frequency_hz: PositiveInt = 5
    replay: ReplayConfig = ReplayConfig()
    categories: dict[Category, CategoryConfig]
    sweeps: dict[str, SweepSize] = Field(min_length=1)
    controller: ControllerConfig = ControllerConfig()
    metrics: MetricsConfig = MetricsConfig()
    gate: GateConfig
    clips: ClipConfig = ClipConfig()

    @model_validator(mode="after")
    def _consistent(self) -> SimulationConfig:
        for name, size in self.sweeps.items():
            unknown = sorted(set(size.runs) - set(self.categories))
            if unknown:
                raise ValueError(f"sweeps.{name}.runs: no category {', '.join(unknown)} in categories")
        unknown = sorted(set(self.gate.categories) - set(self.categories))
        if unknown:
            raise ValueError(f"gate.categories: no category {', '.join(unknown)} in categories")
        for cat, cc in self.categories.items():
            # Every scene is an OpenSCENARIO file on a straight road (merge's entry lane included):
            # highway-env's highway only renders it.
            if cc.scenario != "highway":
                raise ValueError(f"categories.{cat}.scenario must be highway (the file's road replaces it)")
        return self


def load_simulation_config(path: Path | str = SIMULATION_FILE) -> SimulationConfig:
    """Load and validate ``config/simulation.yaml``; raises ConfigError naming file and field."""
    return load_yaml_model(Path(path), SimulationConfig)
