"""TensorRT engines for the GPU targets (T4, A10G, A100, H100, Orin), strongly typed.

Written for TensorRT 10 and 11. TensorRT 10.1 deprecated the implicit INT8 calibrators and
the FP16/INT8 builder flags; TensorRT 11 removed them. Networks are therefore created with
``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (TensorRT 11 is always strongly typed and
ignores the flag, kept for API compatibility) and take every tensor's precision from the ONNX
graph itself:

* fp32: the exported graph (TF32 tactics are disabled where the flag still exists, so FP32
  means FP32);
* fp16: the exported graph converted to FP16 by ``convert_to_fp16`` below (onnx helpers only,
  no onnxconverter-common): float initializers, constants and intermediate tensors become
  float16, the network input and outputs stay float32 behind Cast nodes so the contract's
  I/O dtypes do not change, and inputs the ONNX spec requires in float32 (Resize scales)
  are left alone;
* int8: the Q/DQ graph from ``ort_int8.build_int8_engine(..., runtime="tensorrt")``
  (symmetric int8, zero points 0, FP32 biases), calibrated once on CPU.

``tensorrt`` is imported lazily and CUDA is probed through the driver library (ctypes, no
CUDA Python package): off a GPU node (CI, this code location's CPU pods) every build raises
``TensorRTUnavailable("needs a <device> node with TensorRT: ...")``. The builder's timing
cache is loaded from and saved back to ``timing_cache_path`` so rebuilds on the same GPU
model skip tactic timing.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from adas.intake.contract import Contract
from adas.packaging.config import Int8Config, default_packaging_config
from adas.packaging.ort_int8 import build_int8_engine
from adas.storage import sha256_file

PLAN_FILE = "model.plan"
# Substring of the CUDA device name expected on each catalog device's nodes: a plan is
# specific to a GPU architecture, so building a "t4" engine on another GPU is refused.
DEVICE_GPU_NAMES: dict[str, tuple[str, ...]] = {
    "t4": ("T4",),
    "a10g": ("A10G",),
    "a100": ("A100",),
    "h100": ("H100",),
    "orin": ("Orin",),
}
# (op type, input index) that the ONNX spec types as float32 whatever the data type.
_KEEP_FP32_INPUTS = {("Resize", 1), ("Resize", 2), ("Upsample", 1)}


class TensorRTUnavailable(RuntimeError):
    """TensorRT or a CUDA device is missing on this node."""


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str
    total_memory_mib: int
    driver_version: str


@dataclass(frozen=True)
class TrtBuild:
    path: Path
    device: str
    precision: str
    tensorrt_version: str
    gpu: dict[str, Any]
    strongly_typed: bool
    source_onnx: Path
    source_sha256: str
    sha256: str
    size_bytes: int
    build_seconds: float
    timing_cache: Path
    timing_cache_reused: bool
    profile: dict[str, list[int]]
    network_layers: int
    notes: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("path", "source_onnx", "timing_cache"):
            d[k] = str(d[k])
        return d


# --------------------------------------------------------------------------- availability


def _cuda_devices() -> list[CudaDevice]:
    """CUDA devices through the driver API (``libcuda.so.1``); raises OSError when absent."""
    lib = ctypes.CDLL("libcuda.so.1")
    if lib.cuInit(0) != 0:
        raise OSError("cuInit failed (no usable NVIDIA driver / device)")
    count = ctypes.c_int()
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        raise OSError("no CUDA device")
    drv = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(drv))
    out = []
    for i in range(count.value):
        dev = ctypes.c_int()
        lib.cuDeviceGet(ctypes.byref(dev), i)
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, 256, dev)
        major, minor = ctypes.c_int(), ctypes.c_int()
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)
        mem = ctypes.c_size_t()
        lib.cuDeviceTotalMem_v2(ctypes.byref(mem), dev)
        out.append(
            CudaDevice(
                index=i,
                name=name.value.decode(errors="replace"),
                compute_capability=f"{major.value}.{minor.value}",
                total_memory_mib=int(mem.value) // (1 << 20),
                driver_version=f"{drv.value // 1000}.{(drv.value % 1000) // 10}",
            )
        )
    return out


def _require_tensorrt(device: str) -> tuple[Any, CudaDevice]:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            f"needs a {device} node with TensorRT: the tensorrt package is not installed here ({exc})"
        ) from exc
    try:
        devices = _cuda_devices()
    except OSError as exc:
        raise TensorRTUnavailable(
            f"needs a {device} node with TensorRT: no CUDA device here ({exc})"
        ) from exc
    gpu = devices[0]
    expected = DEVICE_GPU_NAMES.get(device)
    if expected and not any(e.lower() in gpu.name.lower() for e in expected):
        raise TensorRTUnavailable(
            f"needs a {device} node with TensorRT: this node's GPU is {gpu.name!r}; a TensorRT plan is "
            "specific to the GPU it is built on"
        )
    return trt, gpu


def tensorrt_available() -> bool:
    """Whether ``tensorrt`` imports and a CUDA device is visible on this node."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    try:
        return bool(_cuda_devices())
    except OSError:
        return False


# --------------------------------------------------------------------------- FP16 graph


def _fp16_array(arr: np.ndarray) -> np.ndarray:
    info = np.finfo(np.float16)
    return np.clip(arr, info.min, info.max).astype(np.float16)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an FP32 graph with FP32 graph input/outputs (Cast at the boundaries).

    Initializers and ``Constant`` values become float16 except those feeding an input the
    ONNX spec keeps in float32 (Resize/Upsample scales and roi). Values beyond the float16
    range are clipped to it.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    keep: set[str] = set()
    for n in g.node:
        for idx, name in enumerate(n.input):
            if (n.op_type, idx) in _KEEP_FP32_INPUTS and name:
                keep.add(name)
    for init in g.initializer:
        if init.data_type == TensorProto.FLOAT and init.name not in keep:
            init.CopyFrom(numpy_helper.from_array(_fp16_array(numpy_helper.to_array(init)), init.name))
    for n in g.node:
        if n.op_type == "Constant" and n.output[0] not in keep:
            for a in n.attribute:
                if a.name == "value" and a.t.data_type == TensorProto.FLOAT:
                    a.t.CopyFrom(numpy_helper.from_array(_fp16_array(numpy_helper.to_array(a.t)), a.t.name))
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT:
                    a.i = TensorProto.FLOAT16
    # Graph boundary: rename the internal input/outputs and cast between them and the float32 I/O.
    casts_in, casts_out = [], []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == TensorProto.FLOAT:
            internal = f"{inp.name}__fp16"
            for n in g.node:
                n.input[:] = [internal if i == inp.name else i for i in n.input]
            casts_in.append(
                helper.make_node(
                    "Cast", [inp.name], [internal], name=f"/cast_in/{inp.name}", to=TensorProto.FLOAT16
                )
            )
    for out in g.output:
        if out.type.tensor_type.elem_type == TensorProto.FLOAT:
            internal = f"{out.name}__fp16"
            for n in g.node:
                n.output[:] = [internal if o == out.name else o for o in n.output]
                n.input[:] = [internal if i == out.name else i for i in n.input]
            casts_out.append(
                helper.make_node(
                    "Cast", [internal], [out.name], name=f"/cast_out/{out.name}", to=TensorProto.FLOAT
                )
            )
    nodes = [*casts_in, *g.node, *casts_out]
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # stale float32 annotations; re-inferred below
    return onnx.shape_inference.infer_shapes(m, strict_mode=True)


# --------------------------------------------------------------------------- build


def _has_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def build_tensorrt_engine(
    onnx_path: str | Path,
    device: str,
    precision: str,
    out_dir: str | Path,
    timing_cache_path: str | Path,
    *,
    calibration_frames: np.ndarray | None = None,
    contract: Contract | None = None,
    int8_config: Int8Config | None = None,
    max_batch: int = 16,
    opt_batch: int = 1,
    workspace_mib: int = 2048,
) -> TrtBuild:
    """Build ``out_dir/model.plan`` for ``device`` at ``precision`` (see module docstring).

    ``onnx_path``: the FP32 export. For int8 it may already be the TensorRT Q/DQ graph
    (``build_int8_engine(..., runtime="tensorrt")``); otherwise ``calibration_frames`` and
    ``contract`` are needed and the Q/DQ graph is made here first. The optimization profile
    covers batch 1..``max_batch`` (tuned for ``opt_batch``).

    TensorRT and a CUDA device are checked first: off a GPU node every call raises
    ``TensorRTUnavailable("needs a <device> node with TensorRT: ...")``.
    """
    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"unknown precision {precision!r}")
    trt, gpu = _require_tensorrt(device)
    src, out = Path(onnx_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src))
    notes: list[str] = []
    if precision == "int8":
        if not _has_qdq(model):
            if calibration_frames is None or contract is None:
                raise ValueError(
                    f"{src}: int8 TensorRT engines are built from a Q/DQ graph: pass the graph of "
                    "build_int8_engine(..., runtime='tensorrt'), or calibration_frames and contract"
                )
            qdq = build_int8_engine(
                src,
                calibration_frames,
                contract,
                out / "int8_qdq",
                int8_config or default_packaging_config().int8,
                runtime="tensorrt",
            )
            model = onnx.load(str(qdq.path))
            notes.append(
                f"Q/DQ graph calibrated here ({qdq.calibration_frames} frames, {qdq.calibration_method})"
            )
        notes.append("INT8 from the graph's Q/DQ nodes (strongly typed; no implicit calibrator)")
    else:
        if _has_qdq(model):
            raise ValueError(
                f"{src}: a {precision} engine must be built from the float export, not a Q/DQ graph"
            )
        if precision == "fp16":
            model = convert_to_fp16(model)
            notes.append("FP16 from convert_to_fp16: float16 weights and activations, float32 I/O")
    graph_path = out / f"network_{precision}.onnx"
    onnx.save(model, str(graph_path))

    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise RuntimeError(f"TensorRT could not parse {graph_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    cache_path = Path(timing_cache_path)
    reused = cache_path.is_file() and cache_path.stat().st_size > 0
    cache = config.create_timing_cache(cache_path.read_bytes() if reused else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    shapes: dict[str, list[int]] = {}
    # Every input has the dynamic batch first: the image, and a source-size input ([B, 2]) if any.
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        rest = [int(d) for d in inp.shape[1:]]
        batch_shapes = {"min": [1, *rest], "opt": [opt_batch, *rest], "max": [max_batch, *rest]}
        profile.set_shape(inp.name, batch_shapes["min"], batch_shapes["opt"], batch_shapes["max"])
        shapes = shapes or batch_shapes  # the image's, recorded with the build
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError(f"TensorRT failed to build the {device}/{precision} engine from {graph_path}")
    plan_path = out / PLAN_FILE
    plan_path.write_bytes(bytes(plan))
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    return TrtBuild(
        path=plan_path,
        device=device,
        precision=precision,
        tensorrt_version=str(trt.__version__),
        gpu=asdict(gpu),
        strongly_typed=True,
        source_onnx=src,
        source_sha256=sha256_file(src)[0],
        sha256=sha256_file(plan_path)[0],
        size_bytes=plan_path.stat().st_size,
        build_seconds=time.perf_counter() - t0,
        timing_cache=cache_path,
        timing_cache_reused=reused,
        profile=shapes,
        network_layers=int(network.num_layers),
        notes=notes,
    )
