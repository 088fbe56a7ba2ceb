"""The conformance suite's expected outcomes: one YAML file per ``.xosc`` case under tests/data/openscenario/.

Each ``<case>.yaml`` says how to play ``<case>.xosc`` (step, ego, parameter overrides) and what
must come out: the findings of a scenario outside the subset, storyboard transitions at given
times (or never), entity values at given times, the first time a value is reached, a recorded
track reproduced, the renderer's conditions, the ego's intents, a sweep's points. Helper module
of the tests (not collected).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

CASES_DIR = Path(__file__).resolve().parents[1] / "data" / "openscenario"

FieldName = Literal["x", "y", "heading", "speed", "road_s", "road_t", "lane_id", "lane_offset", "odometer"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class At(_Strict):
    t: float
    entity: str
    field: FieldName
    value: float
    tol: float = 1e-6


class FirstWithin(_Strict):
    """The first step at which ``field`` is within ``tol`` of ``value`` is ``t`` (reached then, not before)."""

    entity: str
    field: FieldName
    value: float
    tol: float
    t: float


class TransitionAt(_Strict):
    element: str  # a name or a '::'-qualified suffix of one
    transition: str
    times: list[float]  # every time it happens, in order


class Never(_Strict):
    element: str
    transition: str


class ConditionsAt(_Strict):
    t: float
    weather: str
    lighting: str
    severity: int


class IntentAt(_Strict):
    t: float
    speed: float | None = None
    target_speed: float | None = None
    lane_id: int | None = None
    lateral: float | None = None
    tol: float = 1e-6


class Track(_Strict):
    """A recorded track (t, x, y) the entity must reproduce within ``tol`` metres at every point."""

    entity: str
    tol: float
    points: list[tuple[float, float, float]]


class SweepExpect(_Strict):
    count: int
    first: dict[str, str] | None = None
    last: dict[str, str] | None = None
    seed: int | None = None
    ranges: dict[str, tuple[float, float]] = Field(default_factory=dict)
    choices: dict[str, list[str]] = Field(default_factory=dict)
    play_each_s: float | None = None  # play every point this long (each must be executable)


class Case(_Strict):
    description: str
    step_s: float = 0.2
    ego: str | None = None
    horizon_s: float = 30.0
    parameters: dict[str, str] = Field(default_factory=dict)
    executable: bool = True
    findings: list[str] = Field(default_factory=list)  # each matched by one finding's path or reason
    refused: str | None = None  # the Player refuses the scenario with a message containing this
    end: float | None = None  # the stop trigger fires at this time
    resolved: dict[str, float | str | bool] = Field(default_factory=dict)
    at: list[At] = Field(default_factory=list)
    first_within: list[FirstWithin] = Field(default_factory=list)
    transitions: list[TransitionAt] = Field(default_factory=list)
    order: list[str] = Field(default_factory=list)  # "element:transition", first occurrences in this order
    never: list[Never] = Field(default_factory=list)
    conditions: list[ConditionsAt] = Field(default_factory=list)
    intents: list[IntentAt] = Field(default_factory=list)
    tracks: list[Track] = Field(default_factory=list)
    sweep: SweepExpect | None = None


def load_case(name: str) -> Case:
    return Case.model_validate(yaml.safe_load((CASES_DIR / f"{name}.yaml").read_text()))


def case_names() -> list[str]:
    return sorted(p.stem for p in CASES_DIR.glob("*.yaml"))
