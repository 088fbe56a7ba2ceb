"""ONNX Runtime engines for CPU targets: sessions, and the FP32 engine.

FP32: the exported graph, saved after ONNX Runtime's offline graph optimizations at the
EXTENDED level (constant folding, Conv+Add/Relu fusions into ``com.microsoft`` ops). ALL would
also bake NCHWc layout transforms for the build machine's SIMD width into the file, which ORT
documents as unsafe to load on another CPU, and the session applies those at load anyway.
Offline EXTENDED changes no number (max abs diff 0.0 vs the export) and was measured against
the plain export on the 2-core build machine: session creation 9-20 ms instead of 40-90 ms,
batch-1 p50 equal within noise (12.8 vs 14.4 ms under a shared-CPU load of ~7), so
"optimized" is the default; ``mode="plain"`` keeps the export byte for byte.

The calibrated INT8 (Q/DQ) engine is built in :mod:`adas.packaging.ort_int8`.
onnxruntime is imported where a session is made: the code location imports this module and
must not load it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from adas.intake.contract import Contract
from adas.intake.feeds import feed_names, model_feeds
from adas.packaging.export import op_histogram
from adas.packaging.ort_session import session_options
from adas.storage import sha256_file

Fp32Mode = Literal["optimized", "plain"]


# --------------------------------------------------------------------------- sessions


class OrtEngine:
    """A CPU ONNX Runtime session keyed by the contract's tensor names."""

    def __init__(
        self,
        path: str | Path,
        intra_op_threads: int = 2,
        contract: Contract | None = None,
        providers: Sequence[str] = ("CPUExecutionProvider",),
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.session = ort.InferenceSession(
            str(self.path), session_options(intra_op_threads), providers=list(providers)
        )
        inputs = [i.name for i in self.session.get_inputs()]
        self.input_name: str = inputs[0]
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.contract = contract
        if contract is None:
            if len(inputs) != 1:
                raise ValueError(f"{self.path}: expected one input without a contract, found {inputs}")
            return
        wanted = feed_names(contract.input)
        expected = [o.name for o in contract.outputs]
        if sorted(inputs) != sorted(wanted) or sorted(self.output_names) != sorted(expected):
            raise ValueError(
                f"{self.path}: engine tensors {inputs} -> {self.output_names} do not match the "
                f"contract's {wanted} -> {expected}"
            )
        self.input_name, self.output_names = contract.input.name, expected

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        """Outputs of a placed batch; ``source_hw`` feeds the contract's source-size input, if any."""
        if self.contract is None:
            feeds = {self.input_name: np.ascontiguousarray(x, np.float32)}
        else:
            feeds = model_feeds(self.contract.input, x, source_hw)
        outs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outs, strict=True))

    def __repr__(self) -> str:
        return f"OrtEngine({str(self.path)!r}, providers={self.providers})"


# --------------------------------------------------------------------------- FP32


@dataclass(frozen=True)
class EngineBuild:
    path: Path
    runtime: str
    precision: str
    source_onnx: Path
    mode: str
    sha256: str
    size_bytes: int
    node_count: int
    op_histogram: dict[str, int]
    build_seconds: float
    session_load_ms: float
    max_abs_diff_vs_source: float
    notes: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["source_onnx"] = str(self.path), str(self.source_onnx)
        return d


def _probe_feeds(model_path: Path, contract: Contract | None, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Noise for the image input (and the contract's source-size input at the input's own size)."""
    m = onnx.load(str(model_path), load_external_data=False)
    inp = m.graph.input[0]
    dims = [d.dim_value if d.dim_value > 0 else batch for d in inp.type.tensor_type.shape.dim]
    x = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    return {inp.name: x} if contract is None else model_feeds(contract.input, x)


def _max_abs_diff(a_path: Path, b_path: Path, contract: Contract | None) -> float:
    import onnxruntime as ort

    feeds = _probe_feeds(a_path, contract)
    outs = []
    for p in (a_path, b_path):
        s = ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, feeds))
    return max(float(np.max(np.abs(u - v))) for u, v in zip(*outs, strict=True))


def build_fp32_engine(
    onnx_path: str | Path, out_path: str | Path, mode: Fp32Mode = "optimized", contract: Contract | None = None
) -> EngineBuild:
    """Write the FP32 ORT engine (see module docstring); checks it reproduces the source graph
    (``contract``: how to feed a model with more inputs than the image)."""
    import onnxruntime as ort

    src, out = Path(onnx_path), Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    notes: list[str] = []
    if mode == "optimized":
        so = session_options(optimization="extended")
        so.optimized_model_filepath = str(out)
        ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])
        notes.append("ORT offline graph optimization at EXTENDED level (portable across x86 CPUs)")
    elif mode == "plain":
        shutil.copyfile(src, out)
        notes.append("the exported graph as is; ORT optimizes at session load")
    else:
        raise ValueError(f"mode must be 'optimized' or 'plain', got {mode!r}")
    build_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    OrtEngine(out, contract=contract)
    load_ms = (time.perf_counter() - t1) * 1e3
    model = onnx.load(str(out), load_external_data=False)
    return EngineBuild(
        path=out,
        runtime="onnxruntime",
        precision="fp32",
        source_onnx=src,
        mode=mode,
        sha256=sha256_file(out)[0],
        size_bytes=out.stat().st_size,
        node_count=len(model.graph.node),
        op_histogram=op_histogram(model),
        build_seconds=build_s,
        session_load_ms=load_ms,
        max_abs_diff_vs_source=_max_abs_diff(src, out, contract),
        notes=notes,
    )
