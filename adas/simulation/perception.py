"""Perception in the loop: the packaged engine, an oracle, and fault-injecting wrappers.

Every perception maps one rendered (weathered) frame to ``Detections`` in frame pixels through
one interface, so the controller, simulator, metrics and gate are the same whatever sees:

* ``EnginePerception``: the packaged ONNX Runtime engine + the contract's preprocess (stretch or
  letterbox, colour, normalization) and its kind's decoder (exactly what the pack serves), any
  model family, boxes in the rendered frame's pixels;
* ``OraclePerception``: the simulator's ground-truth boxes (a perfect-perception baseline);
* faults wrapped around either: ``drop_class`` (never reports a class: persistent misses of one
  object type), ``blind_in_weather`` (reports nothing under some weather/lighting), and
  ``random_drop`` (each detection dropped independently per frame: frame-independent misses).

A ``PerceptionSpec`` is plain data (JSON), so a shard of runs can be shipped to another process
or a Kubernetes pod and rebuilt there from the engine file.

Domain code: no dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adas.datasets.coco import CATEGORY_IDS
from adas.detector.decoders import decode
from adas.detector.postprocess import Detections
from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract
from adas.packaging.ort_engines import OrtEngine


@dataclass(frozen=True)
class GtBox:
    """A ground-truth box on the perceived frame, xyxy pixels."""

    xyxy: tuple[float, float, float, float]
    category_id: int
    track_id: int
    is_ego: bool


@dataclass(frozen=True)
class FrameContext:
    """What the simulator knows about a frame (perceptions other than the oracle ignore ``gt``)."""

    seed: int
    step: int
    time_s: float
    weather: str
    lighting: str
    severity: int
    gt: Sequence[GtBox] = field(default_factory=tuple)


class Perception(Protocol):
    label: str

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections: ...


class EnginePerception:
    """The packaged engine (ONNX Runtime on CPU) + the contract's pre- and postprocessing."""

    def __init__(
        self, engine_path: str | Path, contract: Contract, label: str = "engine", threads: int = 1
    ) -> None:
        self.label = label
        self.contract = contract
        self.engine = OrtEngine(engine_path, intra_op_threads=threads, contract=contract)

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        x, geometry = preprocess(frame, self.contract.input)
        return decode(self.engine.run(x, geometry.source_hw), self.contract, geometry=geometry)[0]


class OraclePerception:
    """Ground-truth boxes with score 1 (the ego's own box included, as a detector would see it)."""

    def __init__(self, label: str = "oracle") -> None:
        self.label = label

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        if not ctx.gt:
            return Detections.empty()
        boxes = np.asarray([g.xyxy for g in ctx.gt], np.float32)
        return Detections(
            boxes, np.ones(len(ctx.gt), np.float32), np.asarray([g.category_id for g in ctx.gt])
        )


def _subset(d: Detections, keep: np.ndarray) -> Detections:
    return Detections(d.boxes[keep], d.scores[keep], d.category_ids[keep])


class DropClass:
    """Never reports the given classes: a persistent miss of one object type."""

    def __init__(self, inner: Perception, category_ids: Sequence[int]) -> None:
        self.inner, self.ids = inner, np.asarray(sorted(category_ids), np.int64)
        self.label = f"{inner.label}+drop_class"

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        d = self.inner.detect(frame, ctx)
        return _subset(d, ~np.isin(d.category_ids, self.ids))


class BlindIn:
    """Reports nothing on frames of the given weathers / lightings (e.g. blind in fog)."""

    def __init__(self, inner: Perception, weathers: Sequence[str], lightings: Sequence[str] = ()) -> None:
        self.inner, self.weathers, self.lightings = inner, set(weathers), set(lightings)
        self.label = f"{inner.label}+blind"

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        if ctx.weather in self.weathers or ctx.lighting in self.lightings:
            return Detections.empty()
        return self.inner.detect(frame, ctx)


class RandomDrop:
    """Drops each detection independently with probability ``p`` (seeded by run and step)."""

    def __init__(self, inner: Perception, p: float) -> None:
        self.inner, self.p = inner, float(p)
        self.label = f"{inner.label}+random_drop"

    def detect(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        d = self.inner.detect(frame, ctx)
        rng = np.random.default_rng([ctx.seed, 7919, ctx.step])
        return _subset(d, rng.random(len(d)) >= self.p)


# --------------------------------------------------------------------------------------------------
# Serializable description


class Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["drop_class", "blind_in_weather", "random_drop"]
    classes: list[str] = Field(default_factory=list)
    weathers: list[str] = Field(default_factory=list)
    lightings: list[str] = Field(default_factory=list)
    p: float = Field(0.0, ge=0, le=1)


class PerceptionSpec(BaseModel):
    """What perceives in a run: ``engine`` (a file identified by sha256 + its contract) or ``oracle``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str
    kind: Literal["engine", "oracle"]
    engine_sha256: str | None = None
    contract: Contract | None = None
    faults: list[Fault] = Field(default_factory=list)

    def with_faults(self, label: str, *faults: Fault) -> PerceptionSpec:
        return self.model_copy(update={"label": label, "faults": [*self.faults, *faults]})


def build_perception(
    spec: PerceptionSpec, engine_path: str | Path | None = None, threads: int = 1
) -> Perception:
    """Instantiate a spec (in whichever process runs the shard)."""
    base: Any
    if spec.kind == "engine":
        if engine_path is None or spec.contract is None:
            raise ValueError(
                f"perception {spec.label!r}: an engine perception needs the engine file and contract"
            )
        base = EnginePerception(engine_path, spec.contract, label=spec.label, threads=threads)
    else:
        base = OraclePerception(label=spec.label)
    for f in spec.faults:
        if f.kind == "drop_class":
            unknown = [c for c in f.classes if c not in CATEGORY_IDS]
            if unknown:
                raise ValueError(
                    f"fault drop_class: unknown classes {unknown}; known: {sorted(CATEGORY_IDS)}"
                )
            base = DropClass(base, [CATEGORY_IDS[c] for c in f.classes])
        elif f.kind == "blind_in_weather":
            base = BlindIn(base, f.weathers, f.lightings)
        else:
            base = RandomDrop(base, f.p)
    base.label = spec.label
    return base
