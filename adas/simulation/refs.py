"""Descriptors the simulation assets hand downstream (through the JSON IO manager)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adas.intake.refs import StoredFile
from adas.simulation.gate import GateCheck
from adas.simulation.metrics import GroupSummary


class _Ref(BaseModel):
    model_config = ConfigDict(frozen=True)


class ReplayMetricsRef(_Ref):
    device: str
    precision: str
    version: str
    production_version: str
    prefix: str
    files: dict[str, StoredFile]
    candidate: dict[str, Any]
    production: dict[str, Any]
    flagged: int


class ScenarioLibraryRef(_Ref):
    device: str
    precision: str
    version: str
    prefix: str
    index: StoredFile  # scenario_library.json: templates, sweep points, mapped runs
    scenarios: list[str]
    files: dict[str, StoredFile]
    runs: int


class SimulationRef(_Ref):
    device: str
    precision: str
    version: str
    production_version: str
    sweep: str
    prefix: str
    files: dict[str, StoredFile]
    clips: dict[str, StoredFile]  # "<model>/<run_id>" -> clip
    candidate: dict[str, GroupSummary]
    production: dict[str, GroupSummary]
    runs: int
    shards_computed: int
    shards_reused: int


class SimVerdictRef(_Ref):
    device: str
    precision: str
    version: str
    production_version: str
    green: bool
    rationale: str
    checks: list[GateCheck]
    files: dict[str, StoredFile]

    @property
    def status(self) -> str:
        return "green" if self.green else "red"
