"""Descriptors the evaluation assets hand downstream (through the JSON IO manager)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adas.evaluation.evidence import PairedEvidence
from adas.evaluation.gates import GateVerdict, Latency, MetricsSnapshot
from adas.intake.refs import StoredFile
from adas.packaging.refs import EngineRef


class EvalReportRef(BaseModel):
    """One cell's evaluation: where its reports are and the numbers the gates read."""

    model_config = ConfigDict(frozen=True)

    device: str
    precision: str
    engine: EngineRef
    production_engine: EngineRef | None
    dataset_tag: str
    split: str
    frames: int
    profile: str
    prefix: str
    files: dict[str, StoredFile]
    snapshot: MetricsSnapshot
    production_snapshot: MetricsSnapshot | None
    latency: Latency | None
    # The paired intervals the gate decides on (None: no production baseline, or an evaluation
    # stored before intervals existed; the gate then says "insufficient evidence").
    evidence: PairedEvidence | None = None
    challenge_suites: list[str] = []
    settings_sha256: str = ""
    wandb: dict[str, Any] = {}

    @property
    def version(self) -> str:
        return self.engine.contract.version


class QuantizationRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    device: str
    precision: str
    reference: str | None
    precisions: list[str]
    flagged: list[dict[str, Any]]
    files: dict[str, StoredFile]


class GateRef(BaseModel):
    """The regression gate's verdict for one cell; ``passed`` is what promotion reads."""

    model_config = ConfigDict(frozen=True)

    device: str
    precision: str
    version: str
    production_version: str | None
    passed: bool
    verdict: GateVerdict
    files: dict[str, StoredFile]
