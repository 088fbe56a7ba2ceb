"""``config/packaging.yaml``: export, equivalence tolerances, INT8 quantization, latency protocol
and the Triton repository's batching and instances.

Versioned and validated with pydantic; ``load_packaging_config`` reports every invalid field
with the file named (``adas.config_errors``). The tolerances are per precision because
what counts as "the same model" differs: FP32 engines must match the PyTorch program to
float rounding, INT8 engines only to quantization noise plus a bounded task-metric loss.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import load_yaml_model
from adas.cpu_isa import Isa, has_vnni
from adas.settings import CONFIG_DIR

PACKAGING_FILE = CONFIG_DIR / "packaging.yaml"
# A different packaging.yaml for this process (e.g. lighter checks in tests); default config/packaging.yaml.
PACKAGING_CONFIG_ENV = "ADAS_PACKAGING_CONFIG"
PrecisionName = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OnnxConfig(_Strict):
    # 17 is the newest opset every runtime in the catalog parses (TensorRT 10: opsets 9-20).
    opset: int = Field(17, ge=13, le=21)
    # One batch through torch and ORT right after export: a broken export fails here, not later.
    sanity_max_abs_diff: float = Field(1e-4, gt=0)


class HeadTolerance(_Strict):
    """Bounds on one output head's error vs the PyTorch reference.

    ``*_abs``: absolute error in the head's own units (logits, pixels, cells).
    ``*_rel``: absolute error divided by the head's dynamic range in the same batch
    (max |reference|), so near-zero reference values do not blow the ratio up.
    """

    max_abs: float = Field(gt=0)
    mean_abs: float = Field(gt=0)
    p99_abs: float = Field(gt=0)
    max_rel: float = Field(gt=0)
    mean_rel: float = Field(gt=0)
    p99_rel: float = Field(gt=0)


class DecodeTolerance(_Strict):
    """Bounds on detections after decode + NMS on the real frames (reference vs engine)."""

    # 1 - IoU of matched boxes (same class, IoU >= match_iou).
    mean_iou_drift: float = Field(ge=0, le=1)
    max_iou_drift: float = Field(ge=0, le=1)
    # |score_ref - score_engine| of matched boxes.
    mean_score_drift: float = Field(ge=0, le=1)
    max_score_drift: float = Field(ge=0, le=1)
    # The fraction of matched detections whose score drift may exceed ``max_score_drift`` (0: none
    # may). An IoU-valued score (a dense head's) moves with the candidate box NMS keeps: when a
    # quantized head prefers a neighbouring anchor, that one detection's score moves with it.
    score_drift_outlier_fraction: float = Field(0.0, ge=0, le=1)
    # Unmatched detections (missing: in reference only; extra: in engine only), as a fraction
    # of the reference detections. Those whose score is within ``score_margin`` of the score
    # threshold are not counted: a score drift that flips a borderline box is already bounded
    # by the score drift above.
    max_missing_fraction: float = Field(ge=0, le=1)
    max_extra_fraction: float = Field(ge=0, le=1)
    score_margin: float = Field(0.02, ge=0, le=1)
    match_iou: float = Field(0.5, gt=0, le=1)


class PrecisionTolerance(_Strict):
    # Keyed by contract output name; "default" applies to heads not listed.
    heads: dict[str, HeadTolerance] = Field(min_length=1)
    decode: DecodeTolerance
    # Task-level gate (INT8): max drop of COCO mAP@[.5:.95] in points (0-100 scale).
    max_map_drop_points: float | None = Field(None, ge=0)

    @field_validator("heads")
    @classmethod
    def _has_default(cls, v: dict[str, HeadTolerance]) -> dict[str, HeadTolerance]:
        if "default" not in v:
            raise ValueError("must contain a 'default' entry (used for heads not listed by name)")
        return v

    def head(self, name: str) -> HeadTolerance:
        return self.heads.get(name, self.heads["default"])


class EquivalenceConfig(_Strict):
    num_random_inputs: int = Field(1000, ge=1)
    batch_size: int = Field(50, ge=1, le=1024)
    # Share of the random inputs that are uniform noise over the normalized input range; the
    # rest are real frames perturbed (noise, gain, offset) so activations stay realistic.
    uniform_fraction: float = Field(0.5, ge=0, le=1)
    perturb_noise_std: float = Field(12.0, ge=0, description="gaussian pixel noise, 0-255 units")
    perturb_gain: tuple[float, float] = (0.7, 1.3)
    perturb_offset: tuple[float, float] = (-30.0, 30.0)
    # Detections for the decode comparison use the contract's threshold unless this overrides it.
    decode_score_threshold: float | None = Field(None, ge=0, le=1)
    tolerances: dict[PrecisionName, PrecisionTolerance] = Field(min_length=1)

    @model_validator(mode="after")
    def _ranges(self) -> EquivalenceConfig:
        if self.perturb_gain[0] > self.perturb_gain[1] or self.perturb_offset[0] > self.perturb_offset[1]:
            raise ValueError("perturb_gain and perturb_offset must be (low, high) with low <= high")
        return self

    def for_precision(self, precision: str) -> PrecisionTolerance:
        try:
            return self.tolerances[precision]  # type: ignore[index]
        except KeyError:
            raise KeyError(
                f"packaging.yaml has no equivalence tolerances for precision {precision!r} "
                f"(has {sorted(self.tolerances)})"
            ) from None


class RuntimeQuant(_Strict):
    """How the Q/DQ graph for one runtime is quantized."""

    activation_type: Literal["uint8", "int8"]
    activation_symmetric: bool
    # 7-bit weights. ``without_vnni``: only for a target whose ISA (targets.yaml) lacks VNNI.
    reduce_range: bool | Literal["without_vnni"] = False
    # ORT quantizes conv biases to int32 (DequantizeLinear of int32); TensorRT's parser only
    # dequantizes int8/fp8/int4 and fuses the FP32 bias itself.
    quantize_bias: bool = True


@dataclass(frozen=True)
class Int8Recipe:
    """The quantization of one target: the runtime's scheme with ``reduce_range`` decided for
    the target's instruction set."""

    runtime: str
    target_isa: Isa | None
    activation_type: Literal["uint8", "int8"]
    activation_symmetric: bool
    reduce_range: bool
    quantize_bias: bool


class FallbackConfig(_Strict):
    enabled: bool = True
    # A node whose isolated quantization error (noise-to-signal ratio of its output, see
    # ort_engines.py) exceeds this bound stays FP32.
    max_node_error: float = Field(0.1, gt=0)
    frames: int = Field(8, ge=1, description="calibration frames used to measure per-node error")


class Int8Config(_Strict):
    calibration_method: Literal["MinMax", "Entropy", "Percentile"] = "MinMax"
    per_channel: bool = True
    max_calibration_frames: int = Field(256, ge=1)
    calibration_batch_size: int = Field(16, ge=1)
    # ONNX Runtime on x86 runs u8 activations x s8 weights fastest; TensorRT only accepts
    # symmetric int8 Q/DQ (zero point 0) without int32 biases, so each runtime gets its own
    # graph (from the same calibration ranges).
    runtimes: dict[Literal["onnxruntime", "tensorrt"], RuntimeQuant]
    fallback: FallbackConfig = FallbackConfig()
    # Regexes on ONNX node names (export names nodes after their parameters, e.g.
    # "/heatmap/out/Conv"); matching nodes are never quantized.
    always_fp32_patterns: list[str] = Field(default_factory=list)
    # Also keep FP32 every node that directly produces a graph output (the head output convs
    # of any architecture, whatever its node names).
    keep_output_producers_fp32: bool = False

    @field_validator("always_fp32_patterns")
    @classmethod
    def _regexes(cls, v: list[str]) -> list[str]:
        for p in v:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"{p!r} is not a valid regular expression: {exc}") from exc
        return v

    @field_validator("runtimes")
    @classmethod
    def _trt_symmetric(cls, v: dict[str, RuntimeQuant]) -> dict[str, RuntimeQuant]:
        trt = v.get("tensorrt")
        if trt is not None and (trt.activation_type != "int8" or not trt.activation_symmetric):
            raise ValueError("tensorrt needs int8 symmetric activations (its Q/DQ zero points must be 0)")
        if trt is not None and trt.quantize_bias:
            raise ValueError("tensorrt cannot parse int32 bias DequantizeLinear: set quantize_bias: false")
        if "onnxruntime" not in v:
            raise ValueError("must configure the onnxruntime quantization")
        return v

    def for_runtime(self, runtime: str) -> RuntimeQuant:
        try:
            return self.runtimes[runtime]  # type: ignore[index]
        except KeyError:
            raise KeyError(f"packaging.yaml int8.runtimes has no entry for {runtime!r}") from None

    def recipe(self, runtime: str, target_isa: Isa | None) -> Int8Recipe:
        """``runtime``'s scheme for a target of ISA ``target_isa`` (``None``: not declared, e.g.
        a GPU target; ``without_vnni`` then keeps 7-bit weights, which are right on every CPU)."""
        rq = self.for_runtime(runtime)
        reduce = not has_vnni(target_isa) if rq.reduce_range == "without_vnni" else rq.reduce_range
        return Int8Recipe(
            runtime=runtime,
            target_isa=target_isa,
            activation_type=rq.activation_type,
            activation_symmetric=rq.activation_symmetric,
            reduce_range=reduce,
            quantize_bias=rq.quantize_bias,
        )


class LatencyConfig(_Strict):
    batch_sizes: list[int] = Field(default_factory=lambda: [1, 2, 4, 8, 16], min_length=1)
    warmup_runs: int = Field(20, ge=0)
    window_size: int = Field(50, ge=2, description="timed runs per window")
    # A window also ends after this long (with at least min_window_runs runs): large batches
    # would otherwise make one window of 50 runs last many seconds.
    max_window_seconds: float = Field(1.0, gt=0)
    min_window_runs: int = Field(5, ge=2)
    min_windows: int = Field(3, ge=1)
    max_windows: int = Field(10, ge=1)
    # Stable when the p50s of the last ``stable_windows`` windows lie within this relative
    # spread ((max - min) / median).
    stable_windows: int = Field(3, ge=2)
    stability_tolerance: float = Field(0.05, gt=0, le=1)
    intra_op_threads: int = Field(2, ge=1)
    timeout_s: float = Field(600, gt=0, description="wall-clock limit of one measuring subprocess")
    # A measurement during which other work used more than this fraction of the cores' time
    # (or the hypervisor stole more than max_steal_fraction) is contended: measured again after
    # contention_pause_s, up to contention_retries times; still contended, it is reported as
    # such and a p95 over budget is "contended", not a failure.
    max_others_cpu_fraction: float = Field(0.25, gt=0, le=1)
    max_steal_fraction: float = Field(0.05, gt=0, le=1)
    contention_retries: int = Field(2, ge=0, le=10)
    contention_pause_s: float = Field(2.0, ge=0, le=60)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(b < 1 for b in v) or len(set(v)) != len(v):
            raise ValueError(f"batch sizes must be unique and >= 1, got {v}")
        return v

    @model_validator(mode="after")
    def _windows(self) -> LatencyConfig:
        if self.max_windows < max(self.min_windows, self.stable_windows):
            raise ValueError("max_windows must be >= min_windows and >= stable_windows")
        return self


class TritonConfig(_Strict):
    """How the Triton repository of a cell schedules its steps (``scripts/benchmark_serving.py``
    measures the effect). Every batched step (preprocess, engine, postprocess) uses dynamic
    batching up to ``max_batch_size``, waiting at most ``max_queue_delay_us`` for a batch."""

    max_batch_size: int = Field(16, ge=1, le=1024)
    max_queue_delay_us: int = Field(200, ge=0, le=1_000_000)
    # Engine instances, each with engine_intra_op_threads ONNX Runtime threads (CPU): one
    # instance per core keeps every core on the engine while another instance's batch is
    # pre- or post-processed; on GPU, instances overlap transfers and compute.
    engine_instances: int = Field(2, ge=1, le=64)
    engine_intra_op_threads: int = Field(1, ge=1, le=64)
    # Preprocess and postprocess instances (python backend, numpy): cheap next to the engine.
    step_instances: int = Field(1, ge=1, le=64)


class PackagingConfig(_Strict):
    version: Literal[1]
    onnx: OnnxConfig = OnnxConfig()
    equivalence: EquivalenceConfig
    int8: Int8Config
    latency: LatencyConfig = LatencyConfig()
    triton: TritonConfig = TritonConfig()


def load_packaging_config(path: Path | str = PACKAGING_FILE) -> PackagingConfig:
    return load_yaml_model(Path(path), PackagingConfig)


@functools.cache
def default_packaging_config() -> PackagingConfig:
    """The configuration shipped in ``config/packaging.yaml`` (read once per process)."""
    return load_packaging_config(PACKAGING_FILE)


def packaging_config_from_env() -> PackagingConfig:
    """``$ADAS_PACKAGING_CONFIG`` when set, else the shipped configuration."""
    path = os.environ.get(PACKAGING_CONFIG_ENV)
    return load_packaging_config(path) if path else default_packaging_config()
