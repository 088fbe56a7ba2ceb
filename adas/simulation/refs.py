"""Descriptors the simulation assets hand downstream (through the JSON IO manager)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from adas.intake.refs import StoredFile
from adas.simulation.gate import GateCheck
from adas.simulation.metrics import GroupSummary
from adas.simulation.sequential import SequentialRecord
from adas.stats import Verdict


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
    sequential: SequentialRecord | None = None  # the looks of a sequential sweep (None: one look)


class SimVerdictRef(_Ref):
    device: str
    precision: str
    version: str
    production_version: str
    green: bool  # verdict == "green"
    verdict: Verdict = "red"  # refs stored before the three-valued gate: derived from ``green``
    rationale: str
    checks: list[GateCheck]
    files: dict[str, StoredFile]
    runs: int | None = None  # paired runs decided on (None: not recorded)
    sequential: SequentialRecord | None = None

    @model_validator(mode="before")
    @classmethod
    def _verdict_from_green(cls, data: Any) -> Any:
        if isinstance(data, dict) and "verdict" not in data and "green" in data:
            data = {**data, "verdict": "green" if data["green"] else "red"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SimVerdictRef:
        if self.green != (self.verdict == "green"):
            raise ValueError(f"green={self.green} contradicts verdict {self.verdict!r}")
        return self

    @property
    def status(self) -> Verdict:
        return self.verdict
