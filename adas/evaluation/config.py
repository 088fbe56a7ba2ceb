"""``config/evaluation.yaml``: the evaluation suite (split, thresholds, robustness, OOD, integrity rules).

Validated by pydantic; a bad file fails with the file and field named (``load_yaml_model``).
Regression gates are a separate file (``config/gates.yaml``, :mod:`adas.evaluation.gates`).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from adas.config_errors import load_yaml_model
from adas.evaluation.corruptions import CORRUPTIONS
from adas.evaluation.sensor_faults import SENSOR_FAULTS
from adas.settings import CONFIG_DIR

EVALUATION_FILE = CONFIG_DIR / "evaluation.yaml"
Profile = Literal["standard", "full"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CalibrationSettings(_Strict):
    bins: int = Field(default=10, ge=2, le=100)
    dece_bins: dict[Literal["confidence", "width", "height"], int] = Field(
        default_factory=lambda: {"confidence": 5, "width": 3, "height": 3}
    )
    min_detections_for_threshold: int = Field(default=5, ge=1)

    @field_validator("dece_bins")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        if set(v) != {"confidence", "width", "height"}:
            raise ValueError("dece_bins needs confidence, width and height")
        if any(n < 1 for n in v.values()):
            raise ValueError("every D-ECE bin count must be >= 1")
        return v


class TemporalSettings(_Strict):
    drop_probability: float = Field(default=0.3, ge=0, lt=1)
    jitter_std_s: float = Field(default=0.08, ge=0)
    out_of_order_batch: int = Field(default=4, ge=2)
    tracker_iou: float = Field(default=0.3, gt=0, le=1)
    tracker_max_age: int = Field(default=2, ge=0)
    min_continuity_ratio: float = Field(default=0.8, ge=0, le=1)


# The names a robustness list may hold, per field: (what an error calls one, the known names).
_KNOWN_NAMES = {"corruptions": ("corruption", CORRUPTIONS), "sensor_faults": ("sensor fault", SENSOR_FAULTS)}


class RobustnessSettings(_Strict):
    base_slice: str = "clear_day"
    frames: int = Field(default=48, ge=1)
    full_frames: int = Field(default=0, ge=0, description="0: every frame of the base slice")
    seed: int = 0
    severities: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    corruptions: list[str] = Field(min_length=1)
    sensor_faults: list[str] = Field(default_factory=lambda: ["black", "white", "grey", "stuck_noise"])
    sensor_fault_frames: int = Field(default=8, ge=1)
    temporal: TemporalSettings = TemporalSettings()

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if s not in (1, 2, 3, 4, 5)]
        if bad or len(set(v)) != len(v):
            raise ValueError(f"severities must be distinct integers 1-5, got {v}")
        return sorted(v)

    @field_validator("corruptions", "sensor_faults")
    @classmethod
    def _known(cls, v: list[str], info: ValidationInfo) -> list[str]:
        what, known = _KNOWN_NAMES[info.field_name or ""]
        bad = [name for name in v if name not in known]
        if bad:
            raise ValueError(f"unknown {what}(s) {bad}; known: {', '.join(known)}")
        return v

    def frames_for(self, profile: Profile, available: int) -> int:
        if profile == "full":
            return available if self.full_frames == 0 else min(self.full_frames, available)
        return min(self.frames, available)


class OodSettings(_Strict):
    frames: int = Field(default=48, ge=4)
    in_distribution_frames: int = Field(default=96, ge=4)
    seed: int = 7


class DriftSettings(_Strict):
    enabled: bool = True


class WandbSettings(_Strict):
    enabled: bool = True
    project: str = "adas-evaluation"
    mode: Literal["offline", "online", "disabled"] = "offline"


class SeparationRule(_Strict):
    scenario: str
    forbidden_in: list[str] = Field(min_length=1)
    reason: str = ""


class IntegritySettings(_Strict):
    splits: list[str] = Field(
        default_factory=lambda: ["golden_train", "golden_val", "golden_test", "replay_sequences"]
    )
    scene_leakage: bool = True
    separation: list[SeparationRule] = Field(default_factory=list)
    min_frame_gap_s: dict[str, float] = Field(default_factory=dict)


class EvaluationSettings(_Strict):
    version: Literal[1]
    split: str = "golden_test"
    score_threshold: float = Field(default=0.05, ge=0, le=1)
    batch_size: int = Field(default=32, ge=1, le=1024)
    match_iou: float = Field(default=0.5, gt=0, le=1)
    calibration: CalibrationSettings = CalibrationSettings()
    robustness: RobustnessSettings
    ood: OodSettings = OodSettings()
    drift: DriftSettings = DriftSettings()
    wandb: WandbSettings = WandbSettings()
    integrity: IntegritySettings = IntegritySettings()


def load_evaluation_settings(path: Path | str = EVALUATION_FILE) -> EvaluationSettings:
    return load_yaml_model(Path(path), EvaluationSettings)


@functools.cache
def default_evaluation_settings() -> EvaluationSettings:
    return load_evaluation_settings(EVALUATION_FILE)


def file_sha256(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
