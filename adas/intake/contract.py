"""The checkpoint bundle contract: what a candidate detector bundle must declare.

A bundle is a directory holding the model file, ``contract.yaml`` and ``lineage.json``.
These pydantic models are the single definition of both files; the trainer writes them and
intake validates them, so a field renamed here is renamed everywhere.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CONTRACT_FILE = "contract.yaml"
LINEAGE_FILE = "lineage.json"
SCHEMA_VERSION = 1

# Full matches only (``$`` would accept a trailing newline), bounded lengths.
_SEMVER = re.compile(
    r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})(?:-[0-9A-Za-z.-]{1,32})?(?:\+[0-9A-Za-z.-]{1,32})?"
)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_DIM = 16384
MAX_CLASS_ID = 100_000


def version_identity(version: str) -> str:
    """The version without build metadata: ``1.3.0+rebuild`` is the same version as ``1.3.0``."""
    return version.split("+", 1)[0]


class _Strict(BaseModel):
    # NaN and infinity are never valid in a contract (normalization, thresholds).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Normalization(_Strict):
    """``x = (pixel * scale - mean[c]) / std[c]`` on RGB channels."""

    scale: float = Field(gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class TensorSpec(_Strict):
    """A named tensor; ``-1`` in ``shape`` marks a dynamic axis (the batch)."""

    name: str = Field(min_length=1, max_length=128)
    shape: list[int] = Field(min_length=1, max_length=8)
    dtype: Literal["float32", "float16", "uint8", "int64"]

    @field_validator("shape")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d == 0 or d < -1 for d in v):
            raise ValueError("dimensions must be positive, or -1 for a dynamic axis")
        if any(d > MAX_DIM for d in v):
            raise ValueError(f"dimensions must be at most {MAX_DIM}")
        return v


class InputSpec(TensorSpec):
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    normalization: Normalization


class OutputSpec(TensorSpec):
    description: str = ""


class ClassEntry(_Strict):
    """Model channel ``index`` predicts COCO category ``id`` named ``name``."""

    id: int = Field(ge=1, le=MAX_CLASS_ID)
    name: str = Field(min_length=1, max_length=64)


class Postprocess(_Strict):
    """How raw head outputs become boxes (CenterNet-style heatmap decode + NMS)."""

    type: Literal["centernet"] = "centernet"
    stride: int = Field(ge=1, le=256)
    heatmap_output: str
    size_output: str
    offset_output: str
    score_threshold: float = Field(ge=0, le=1)
    nms_iou_threshold: float = Field(gt=0, le=1)
    max_detections: int = Field(ge=1, le=1000)


class Contract(_Strict):
    """``contract.yaml``: the inference contract of a candidate bundle."""

    schema_version: Literal[1] = SCHEMA_VERSION
    task: str
    model_name: str
    version: str
    model_file: str
    model_format: Literal["torch_export", "torchscript"]
    input: InputSpec
    outputs: list[OutputSpec] = Field(min_length=1)
    classes: list[ClassEntry] = Field(min_length=1)
    postprocess: Postprocess
    quantization_aware: bool = False

    @field_validator("task", "model_name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-64 lowercase letters, digits and '-' (used in artifact paths)")
        return v

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        if not _SEMVER.fullmatch(v):
            raise ValueError(f"{v[:40]!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        return v

    @field_validator("model_file")
    @classmethod
    def _relative(cls, v: str) -> str:
        if not _FILE.fullmatch(v):
            raise ValueError("must be a plain file name inside the bundle (letters, digits, '_', '.', '-')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if self.input.shape[0] != -1 or any(d == -1 for d in self.input.shape[1:]):
            raise ValueError("input.shape must have a dynamic batch (-1) first and fixed other axes")
        if len(self.input.shape) != 4:
            raise ValueError("input.shape must be [batch, channels, height, width]")
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"outputs have duplicate names: {names}")
        for field in ("heatmap_output", "size_output", "offset_output"):
            if getattr(self.postprocess, field) not in names:
                raise ValueError(f"postprocess.{field} names an output that is not in outputs: {names}")
        heat = next(o for o in self.outputs if o.name == self.postprocess.heatmap_output)
        if len(heat.shape) != 4 or heat.shape[1] != len(self.classes):
            raise ValueError(
                f"heatmap output {heat.name!r} must be [batch, {len(self.classes)} classes, h, w], got {heat.shape}"
            )
        stride = self.postprocess.stride
        fixed = heat.shape[2] > 0 and heat.shape[3] > 0
        if fixed and (heat.shape[2] * stride, heat.shape[3] * stride) != tuple(self.input.shape[2:]):
            raise ValueError(
                f"postprocess.stride {stride} does not fit the shapes: heatmap {heat.shape[2]}x{heat.shape[3]} "
                f"x {stride} != input {self.input.shape[2]}x{self.input.shape[3]}"
            )
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"classes have duplicate ids: {ids}")
        return self

    @property
    def version_identity(self) -> str:
        return version_identity(self.version)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]


class Lineage(_Strict):
    """``lineage.json``: where the checkpoint came from."""

    model_config = ConfigDict(extra="allow", frozen=True)

    training_run_id: str = Field(min_length=1)
    dataset_tag: str = Field(min_length=1)
    git_sha: str

    @field_validator("git_sha")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{7,40}", v):  # fullmatch: no trailing newline
            raise ValueError("must be a git commit SHA (7-40 lowercase hex digits)")
        return v
