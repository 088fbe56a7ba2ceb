"""PyTorch CUDA engines: the bundle's exported program on a GPU, without TensorRT.

The TensorRT cells of the catalog need TensorRT on a GPU node; this module is the GPU path
that needs only PyTorch with CUDA, used to verify a candidate on a GPU (equivalence, mAP,
latency) and as the reference a TensorRT plan is compared with on the same node. Three
modes, each behind the ``run(x) -> {output: array}`` interface of the equivalence and mAP
checks (``adas.packaging.equivalence``):

* ``eager``: the program's module on the GPU (FP32 or FP16 weights, channels-last),
* ``cuda_graph``: the same module captured into one CUDA graph per batch size, so a batch
  costs one graph launch instead of one launch per kernel (small batches are launch-bound),
* ``aoti``: AOTInductor: the program re-exported at the chosen precision with a dynamic batch
  dimension and compiled ahead of time into a ``.pt2`` package (kernels + weights) that
  loads without Python tracing; the artifact a libtorch / C++ server would load.

``torch.cuda`` is only touched inside functions: off a GPU node (CI, the CPU pods) building
an engine raises :class:`CudaUnavailable` naming what is missing.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Mode = Literal["eager", "cuda_graph", "aoti"]
Precision = Literal["fp32", "fp16"]
MODES: tuple[Mode, ...] = ("eager", "cuda_graph", "aoti")
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


class CudaUnavailable(RuntimeError):
    """This node has no usable CUDA device (or this PyTorch build has no CUDA)."""


def cuda_available() -> bool:
    return torch.cuda.is_available()


def require_cuda() -> torch.device:
    if torch.version.cuda is None:
        raise CudaUnavailable(f"PyTorch {torch.__version__} is a CPU build: the CUDA path needs a CUDA build")
    if not torch.cuda.is_available():
        raise CudaUnavailable(
            f"no CUDA device visible to PyTorch {torch.__version__} (CUDA {torch.version.cuda}); "
            "run this on a GPU node"
        )
    return torch.device("cuda", torch.cuda.current_device())


@contextlib.contextmanager
def precision_flags(precision: str) -> Iterator[None]:
    """IEEE FP32 for the ``fp32`` engines.

    PyTorch lets cuDNN run FP32 convolutions in TF32 on Ampere and later by default: 10-bit
    mantissas, measured max abs error 7e-3 on the heatmap logits of the demo detector, seven
    times the FP32 tolerance. An FP32 engine must compute in FP32, so TF32 is off while it runs
    (and while it is captured or compiled); FP16 engines are unaffected.
    """
    if precision != "fp32":
        yield
        return
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    previous = matmul.allow_tf32
    with cudnn.flags(
        enabled=cudnn.enabled, benchmark=cudnn.benchmark, deterministic=cudnn.deterministic, allow_tf32=False
    ):
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = previous


def _check(mode: str, precision: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {MODES}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not one of {PRECISIONS} (INT8 on GPU is TensorRT's)")


def _outputs(result: Any) -> list[torch.Tensor]:
    return list(result) if isinstance(result, list | tuple) else [result]


class _GraphedBatch:
    """One CUDA graph of the module for one batch size, with static input/output buffers."""

    def __init__(self, module: nn.Module, example: torch.Tensor) -> None:
        self.input = example.clone()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        # Warm-up on a side stream (cuDNN autotuning, lazy allocations) before capture.
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                module(self.input)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode():
            self.outputs = _outputs(module(self.input))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.input.copy_(x)
        self.graph.replay()
        return self.outputs


class TorchCudaEngine:
    """The bundle's module on a CUDA device in one of :data:`MODES` at one of :data:`PRECISIONS`.

    ``run`` takes and returns host arrays (FP32 in, FP32 out, the contract's layout), like the
    ONNX Runtime and TensorRT engines; ``run_device`` takes a device tensor of the engine's
    dtype and returns device tensors, for latency without host copies.
    """

    def __init__(
        self,
        module: nn.Module,
        output_names: Sequence[str],
        input_shape: Sequence[int],
        *,
        mode: Mode = "eager",
        precision: Precision = "fp32",
        max_batch: int = 64,
        package_dir: str | Path | None = None,
    ) -> None:
        _check(mode, precision)
        self.device = require_cuda()
        self.mode, self.precision, self.max_batch = mode, precision, max_batch
        self.dtype = _DTYPES[precision]
        self.output_names = list(output_names)
        self.input_shape = tuple(int(d) for d in input_shape)  # (C, H, W)
        gpu = copy.deepcopy(module).to(self.device, self.dtype).eval()
        self.package_path: Path | None = None
        self._graphs: dict[int, _GraphedBatch] = {}
        self.build_s = 0.0
        t0 = time.perf_counter()
        with precision_flags(precision):
            self._build(gpu, package_dir)
        self.build_s = time.perf_counter() - t0

    def _build(self, gpu: nn.Module, package_dir: str | Path | None) -> None:
        mode, precision, max_batch = self.mode, self.precision, self.max_batch
        if mode == "aoti":
            if package_dir is None:
                raise ValueError("mode 'aoti' needs a package_dir to write the compiled .pt2 package")
            self.package_path = compile_aoti_package(
                gpu, self.input_shape, self.dtype, max_batch, Path(package_dir) / f"detector-{precision}.pt2"
            )
            self._forward: Callable[[torch.Tensor], Any] = load_aoti_package(self.package_path)
            self._layout = torch.contiguous_format
        else:
            # cuDNN's tensor-core convolutions run NHWC; NCHW would add transposes per layer.
            self._layout = torch.channels_last
            self._forward = gpu.to(memory_format=torch.channels_last)

    def _device_input(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(x)
        if t.ndim != 4 or tuple(t.shape[1:]) != self.input_shape:
            raise ValueError(
                f"input of shape {list(t.shape)}; the engine takes [B, {', '.join(map(str, self.input_shape))}]"
            )
        if not 1 <= t.shape[0] <= self.max_batch:
            raise ValueError(f"batch {t.shape[0]} is outside 1..{self.max_batch}")
        return t.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self._layout)

    def run_device(self, x: torch.Tensor) -> list[torch.Tensor]:
        with torch.inference_mode(), precision_flags(self.precision):
            if self.mode == "cuda_graph":
                batch = int(x.shape[0])
                graphed = self._graphs.get(batch)
                if graphed is None:
                    graphed = self._graphs[batch] = _GraphedBatch(self._forward, x)
                return graphed(x)
            return _outputs(self._forward(x))

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        # The program of a torch bundle takes the image alone (a source-size input is ONNX-only).
        outs = self.run_device(self._device_input(x))
        return {n: o.float().cpu().numpy() for n, o in zip(self.output_names, outs, strict=True)}


def compile_aoti_package(
    module: nn.Module, input_shape: Sequence[int], dtype: torch.dtype, max_batch: int, package_path: Path
) -> Path:
    """Re-export ``module`` (already on the GPU in ``dtype``) with a dynamic batch and compile it
    with AOTInductor into ``package_path``; returns the path."""
    example = torch.zeros(2, *input_shape, device=next(module.parameters()).device, dtype=dtype)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},), strict=False)
    package_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        out = torch._inductor.aoti_compile_and_package(program, package_path=str(package_path))
    return Path(out)


def load_aoti_package(package_path: Path) -> Callable[[torch.Tensor], Any]:
    """Load a compiled package; its outputs come back as a list of device tensors.

    libstdc++ is promoted to the global symbol scope first: PyTorch's libraries load it
    privately, and the package's wrapper library (built by the node's g++) then binds its
    ``std::regex`` locale facets to a second, uninitialised copy and crashes inside
    ``parse_device_str`` on the first load (seen on an H100 node with PyTorch 2.11 / g++ 13;
    a plain Conv2d package crashed the same way, so it is not this model).
    """
    ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
    return torch._inductor.aoti_load_package(str(package_path))


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class CudaLatency:
    mode: str
    precision: str
    batch_size: int
    device_ms_p50: float  # input already on the GPU, outputs left there (CUDA events)
    device_ms_p90: float
    host_ms_p50: float  # numpy in, numpy out: H2D copy + compute + D2H copy
    host_ms_p90: float
    frames_per_s: float  # batch / device p50
    iterations: int

    def to_row(self) -> dict[str, Any]:
        return asdict(self)


def measure_cuda_latency(
    engine: TorchCudaEngine, batch_size: int, iterations: int = 200, warmup: int = 20, seed: int = 0
) -> CudaLatency:
    """Median and p90 latency of one batch, on the device (CUDA events) and host to host."""
    rng = np.random.default_rng(seed)
    host = rng.standard_normal((batch_size, *engine.input_shape)).astype(np.float32)
    x = engine._device_input(host)
    for _ in range(warmup):
        engine.run_device(x)
        engine.run(host)
    torch.cuda.synchronize()
    device_ms = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        engine.run_device(x)
        end.record()
        end.synchronize()
        device_ms.append(start.elapsed_time(end))
    host_ms = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        engine.run(host)  # .cpu() synchronizes
        host_ms.append((time.perf_counter() - t0) * 1e3)
    d50, d90 = np.percentile(device_ms, [50, 90])
    h50, h90 = np.percentile(host_ms, [50, 90])
    return CudaLatency(
        mode=engine.mode,
        precision=engine.precision,
        batch_size=batch_size,
        device_ms_p50=round(float(d50), 4),
        device_ms_p90=round(float(d90), 4),
        host_ms_p50=round(float(h50), 4),
        host_ms_p90=round(float(h90), 4),
        frames_per_s=round(batch_size / float(d50) * 1e3, 1),
        iterations=iterations,
    )
