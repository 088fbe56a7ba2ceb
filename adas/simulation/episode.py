"""One closed-loop run as data: what to simulate (``EpisodeSpec``) and what it leaves (trace, clip).

Shared by the simulator (``world``), the episode loop (``closed_loop``), the metrics, the scenario
library (which maps its sweeps onto ``EpisodeSpec`` runs) and the clips. Domain code: no dagster import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adas.detector.postprocess import Detections
from adas.simulation.perception import GtBox


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
    # An OpenSCENARIO run: the file (relative to the run's scenario folder) the player plays, and its
    # parameter values. The file's entities are the whole scene (no random traffic); its Init
    # places the ego and its environment sets the weather.
    xosc: str | None = None
    parameters: dict[str, str] = Field(default_factory=dict)

    @property
    def condition(self) -> str:
        return f"{self.weather}/{self.lighting}"


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
    # Per step: the GT track id of the vehicle ahead in the ego's path (None: none), the track ids
    # whose GT box is in the frame (the ego's excluded) and those a detection matched (IoU >=
    # ``DETECTION_MATCH_IOU``): what time to first detection is measured from.
    lead_id: list[int | None] = field(default_factory=list)
    visible_ids: list[frozenset[int]] = field(default_factory=list)
    detected_ids: list[frozenset[int]] = field(default_factory=list)
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
    # CPU seconds per stage of the step loop (render, weather, engine, tracker, controller, measure,
    # world_step, player): the profile the benchmark prints.
    stage_cpu_s: dict[str, float] = field(default_factory=dict)
