"""ONNX Runtime engines for CPU targets: an FP32 engine and a calibrated INT8 (Q/DQ) engine.

FP32: the exported graph, saved after ONNX Runtime's offline graph optimizations at the
EXTENDED level (constant folding, Conv+Add/Relu fusions into ``com.microsoft`` ops). ALL would
also bake NCHWc layout transforms for the build machine's SIMD width into the file, which ORT
documents as unsafe to load on another CPU, and the session applies those at load anyway.
Offline EXTENDED changes no number (max abs diff 0.0 vs the export) and was measured against
the plain export on the 2-core build machine: session creation 9-20 ms instead of 40-90 ms,
batch-1 p50 equal within noise (12.8 vs 14.4 ms under a shared-CPU load of ~7), so
"optimized" is the default; ``mode="plain"`` keeps the export byte for byte.

INT8: ONNX Runtime static quantization in the Q/DQ format (the format TensorRT consumes too),
MinMax calibration on the bundle's calibration shard, per-channel weights:

1. ``quant_pre_process(skip_symbolic_shape=True)``: symbolic shape inference fails on the
   Resize with a dynamic batch; ONNX shape inference is enough for this graph;
2. calibrate once, keeping the ranges (ORT's JSON calibration cache) so every later
   quantization pass reuses exactly the same ranges;
3. per-layer fallback: each quantized node is measured in isolation (its FP32 inputs
   quantized with the calibrated parameters, its weights as quantized, its output
   re-quantized, against the FP32 output), all nodes in one inference on a few calibration
   frames. A node whose noise-to-signal ratio ``rms(err) / std(fp32)`` exceeds the configured
   bound, or that matches an always-FP32 pattern, goes into ``nodes_to_exclude``;
4. the final quantization writes ``model.onnx`` and ``calibration.cache``: a text table of
   tensor -> calibrated (min, max), scale and zero point, one per line, with a header naming
   the method, the frame count and the sha256 of the calibration frames.

A bundle whose contract says ``quantization_aware: true`` already carries its Q/DQ nodes (the
scales learned in training): its graph is used as is and only the cache is derived from it.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from adas.detector.preprocess import normalize
from adas.intake.contract import Contract
from adas.packaging.config import Int8Config
from adas.packaging.export import op_histogram, sha256_file

INT8_MODEL_FILE = "model.onnx"
CALIBRATION_CACHE_FILE = "calibration.cache"
Fp32Mode = Literal["optimized", "plain"]
_QDQ = ("QuantizeLinear", "DequantizeLinear")


# --------------------------------------------------------------------------- sessions


def session_options(intra_op_threads: int = 2, optimization: str = "all") -> Any:
    """Session options for measured, reproducible CPU inference.

    ``allow_spinning = 0``: ORT's workers otherwise busy-wait between calls and, on a 2-core
    node, steal the cores from whatever else runs (torch in the same process, the next
    request's preprocessing). One inter-op thread: the graph is a single chain.
    """
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[optimization]
    so.log_severity_level = 3
    return so


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
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: expected one input, found {[i.name for i in inputs]}")
        self.input_name: str = inputs[0].name
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        if contract is not None:
            expected = [o.name for o in contract.outputs]
            if self.input_name != contract.input.name or sorted(self.output_names) != sorted(expected):
                raise ValueError(
                    f"{self.path}: engine tensors {self.input_name} -> {self.output_names} do not match the "
                    f"contract's {contract.input.name} -> {expected}"
                )
            self.output_names = expected

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.session.run(self.output_names, {self.input_name: np.ascontiguousarray(x, np.float32)})
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


def _probe_input(model_path: Path, batch: int = 2, seed: int = 0) -> tuple[str, np.ndarray]:
    m = onnx.load(str(model_path), load_external_data=False)
    inp = m.graph.input[0]
    dims = [d.dim_value if d.dim_value > 0 else batch for d in inp.type.tensor_type.shape.dim]
    return inp.name, np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


def _max_abs_diff(a_path: Path, b_path: Path) -> float:
    import onnxruntime as ort

    name, x = _probe_input(a_path)
    outs = []
    for p in (a_path, b_path):
        s = ort.InferenceSession(str(p), session_options(), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {name: x}))
    return max(float(np.max(np.abs(u - v))) for u, v in zip(*outs, strict=True))


def build_fp32_engine(
    onnx_path: str | Path, out_path: str | Path, mode: Fp32Mode = "optimized"
) -> EngineBuild:
    """Write the FP32 ORT engine (see module docstring); checks it reproduces the source graph."""
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
    OrtEngine(out)
    load_ms = (time.perf_counter() - t1) * 1e3
    model = onnx.load(str(out), load_external_data=False)
    return EngineBuild(
        path=out,
        runtime="onnxruntime",
        precision="fp32",
        source_onnx=src,
        mode=mode,
        sha256=sha256_file(out),
        size_bytes=out.stat().st_size,
        node_count=len(model.graph.node),
        op_histogram=op_histogram(model),
        build_seconds=build_s,
        session_load_ms=load_ms,
        max_abs_diff_vs_source=_max_abs_diff(src, out),
        notes=notes,
    )


# --------------------------------------------------------------------------- INT8


@dataclass(frozen=True)
class Int8Build:
    path: Path
    calibration_cache: Path
    runtime: str
    quantization_aware: bool
    calibration_method: str
    per_channel: bool
    activation_type: str
    activation_symmetric: bool
    calibration_frames: int
    shard_sha256: str
    excluded_nodes: dict[str, str]
    node_errors: dict[str, float]
    quantized_nodes: int
    qdq_nodes: int
    op_histogram: dict[str, int]
    sha256: str
    size_bytes: int
    build_seconds: float
    fallback_seconds: float
    notes: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"], d["calibration_cache"] = str(self.path), str(self.calibration_cache)
        return d


class _FramesReader:
    """CalibrationDataReader over uint8 frames, normalized per the contract, in batches."""

    def __init__(self, frames: np.ndarray, contract: Contract, batch: int) -> None:
        self._frames, self._contract, self._batch = frames, contract, batch
        self._it: Iterator[dict[str, np.ndarray]] = self._gen()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(self._frames), self._batch):
            x = normalize(self._frames[s : s + self._batch], self._contract.input.normalization)
            yield {self._contract.input.name: x}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._gen()

    def __len__(self) -> int:
        return -(-len(self._frames) // self._batch)


def shard_sha256(frames_uint8: np.ndarray) -> str:
    """Fingerprint of the calibration frames (shape + bytes): which shard produced the ranges."""
    h = hashlib.sha256(repr(tuple(frames_uint8.shape)).encode())
    h.update(np.ascontiguousarray(frames_uint8).tobytes())
    return h.hexdigest()


def _quant_kwargs(config: Int8Config, runtime: str) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    rq = config.for_runtime(runtime)
    return {
        "quant_format": QuantFormat.QDQ,
        "per_channel": config.per_channel,
        "reduce_range": rq.reduce_range,
        "activation_type": QuantType.QUInt8 if rq.activation_type == "uint8" else QuantType.QInt8,
        "weight_type": QuantType.QInt8,
        "calibrate_method": getattr(CalibrationMethod, config.calibration_method),
        "extra_options": {
            "ActivationSymmetric": rq.activation_symmetric,
            "WeightSymmetric": True,
            "QuantizeBias": rq.quantize_bias,
        },
    }


def _quantize(
    pre: Path,
    out: Path,
    reader: _FramesReader | None,
    cache_json: Path,
    kwargs: dict[str, Any],
    exclude: list[str],
) -> None:
    from onnxruntime.quantization import quantize_static

    if reader is not None:
        reader.rewind()
    quantize_static(
        str(pre),
        str(out),
        reader,
        nodes_to_exclude=list(exclude),
        calibration_cache_path=str(cache_json),
        **kwargs,
    )


def _pattern_excluded(model: onnx.ModelProto, config: Int8Config) -> dict[str, str]:
    out: dict[str, str] = {}
    graph_outputs = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for p in config.always_fp32_patterns:
            if re.search(p, node.name):
                out[node.name] = f"always FP32 (matches pattern {p!r})"
                break
        else:
            if config.keep_output_producers_fp32 and any(o in graph_outputs for o in node.output):
                out[node.name] = "always FP32 (produces a graph output)"
    return out


def _is_qdq(node: onnx.NodeProto) -> bool:
    return node.op_type in _QDQ


def node_precisions(model: onnx.ModelProto) -> dict[str, str]:
    """Compute node name -> "int8" or "fp32" as a Q/DQ runtime will execute it.

    A node runs in INT8 when it matches the Q/DQ node-unit pattern that ORT and TensorRT fuse:
    every data input comes from a DequantizeLinear, no weight is a float initializer (an
    excluded Conv keeps its float weights), and an output feeds a QuantizeLinear. A node that
    merely reads a dequantized tensor (a neighbour's output quantized for another consumer)
    but keeps float weights computes in FP32.
    """
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consts = set(inits) | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    dq_out = {o for n in g.node if n.op_type == "DequantizeLinear" for o in n.output}
    q_in = {n.input[0] for n in g.node if n.op_type == "QuantizeLinear"}
    out: dict[str, str] = {}
    for n in g.node:
        if _is_qdq(n) or n.op_type == "Constant":
            continue
        float_weight = any(
            i in inits and inits[i].data_type == onnx.TensorProto.FLOAT and len(inits[i].dims) >= 2
            for i in n.input
        )
        data = [i for i in n.input if i and i not in consts]
        int8 = (
            not float_weight
            and bool(data)
            and all(i in dq_out for i in data)
            and any(o in q_in for o in n.output)
        )
        out[n.name] = "int8" if int8 else "fp32"
    return out


def quantized_compute_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that run in INT8 (see ``node_precisions``)."""
    return [name for name, p in node_precisions(model).items() if p == "int8"]


def _isolated_error_model(
    fp32: onnx.ModelProto, qdq: onnx.ModelProto
) -> tuple[onnx.ModelProto, dict[str, tuple[str, str]]]:
    """FP32 graph + for every quantized node of ``qdq`` an isolated quantized copy.

    The copy reads the FP32 tensors through copies of the node's own Q/DQ (same scales and
    zero points), its quantized weights, and re-quantizes its output like the Q/DQ graph does.
    Returns the model and node name -> (fp32 tensor, isolated tensor) to compare.
    """
    g_q = qdq.graph
    fp32_tensors = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    producer = {o: n for n in g_q.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in g_q.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    q_inits = {i.name: i for i in g_q.initializer}
    model = onnx.ModelProto()
    model.CopyFrom(fp32)
    g = model.graph
    have_inits = {i.name for i in g.initializer}
    pairs: dict[str, tuple[str, str]] = {}

    def need_init(name: str) -> None:
        if name and name in q_inits and name not in have_inits:
            g.initializer.append(q_inits[name])
            have_inits.add(name)

    def copy_node(n: onnx.NodeProto, prefix: str, inputs: list[str]) -> str:
        for i in n.input[1:]:
            need_init(i)
        out = f"{prefix}{n.output[0]}"
        new = helper.make_node(n.op_type, inputs, [out], name=f"{prefix}{n.name}", domain=n.domain)
        new.attribute.extend(n.attribute)
        g.node.append(new)
        return out

    for name in quantized_compute_nodes(qdq):
        node = next(n for n in g_q.node if n.name == name)
        prefix = f"iso::{name}::"
        new_inputs: list[str] = []
        ok = True
        for i in node.input:
            p = producer.get(i)
            if not i or p is None or p.op_type != "DequantizeLinear":
                # Unquantized input: an FP32 tensor of the original graph or a constant.
                if i and i not in fp32_tensors:
                    need_init(i)
                    if i not in have_inits:
                        ok = False
                new_inputs.append(i)
                continue
            src = p.input[0]
            if src in q_inits:  # quantized weight / bias: DQ of the stored integers
                need_init(src)
                new_inputs.append(copy_node(p, prefix, [src, *p.input[1:]]))
                continue
            q = producer.get(src)
            if q is None or q.op_type != "QuantizeLinear" or q.input[0] not in fp32_tensors:
                ok = False
                break
            qo = copy_node(q, prefix, [q.input[0], *q.input[1:]])
            new_inputs.append(copy_node(p, prefix, [qo, *p.input[1:]]))
        if not ok:
            continue
        out = node.output[0]
        iso = helper.make_node(
            node.op_type, new_inputs, [f"{prefix}{out}"], name=f"{prefix}{name}", domain=node.domain
        )
        iso.attribute.extend(node.attribute)
        g.node.append(iso)
        result, target = f"{prefix}{out}", out
        q_next = [c for c in consumers.get(out, []) if c.op_type == "QuantizeLinear"]
        if q_next:
            qn = q_next[0]
            dq = next((c for c in consumers.get(qn.output[0], []) if c.op_type == "DequantizeLinear"), None)
            if dq is not None:
                result = copy_node(
                    dq, prefix, [copy_node(qn, prefix, [result, *qn.input[1:]]), *dq.input[1:]]
                )
                if out not in fp32_tensors:  # graph outputs: Conv -> Q -> DQ named like the output
                    target = dq.output[0]
        if target not in fp32_tensors:
            g.node.pop()
            continue
        pairs[name] = (target, result)
    del g.output[:]
    for t in sorted({t for pair in pairs.values() for t in pair}):
        g.output.append(helper.make_empty_tensor_value_info(t))
    return model, pairs


def _node_errors(fp32_path: Path, qdq_path: Path, x: np.ndarray, workdir: Path) -> dict[str, float]:
    """Isolated noise-to-signal ratio of every quantized node: rms(q - f) / std(f)."""
    import onnxruntime as ort

    fp32, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    model, pairs = _isolated_error_model(fp32, qdq)
    path = workdir / "isolated_errors.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(
        str(path), session_options(optimization="basic"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, {fp32.graph.input[0].name: x}), strict=True))
    errors = {}
    for node, (ref_name, iso_name) in pairs.items():
        f = values[ref_name].astype(np.float64)
        q = values[iso_name].astype(np.float64)
        errors[node] = float(np.sqrt(np.mean((q - f) ** 2)) / max(float(np.std(f)), 1e-12))
    return errors


def _qdq_tables(model: onnx.ModelProto) -> dict[str, tuple[float, int, str]]:
    """Activation tensor -> (scale, zero point, dtype) of the QuantizeLinear nodes that read it."""
    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, tuple[float, int, str]] = {}
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[1] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]]).reshape(-1)
        if len(n.input) > 2 and n.input[2] in inits:
            zp_arr = numpy_helper.to_array(inits[n.input[2]])
            zp, dtype = int(zp_arr.reshape(-1)[0]), str(zp_arr.dtype)
        else:
            zp, dtype = 0, "uint8"
        out[n.input[0]] = (float(scale[0]), zp, dtype)
    return out


def _implied_range(scale: float, zp: int, dtype: str) -> tuple[float, float]:
    qmin, qmax = (-128, 127) if dtype == "int8" else (0, 255)
    return (qmin - zp) * scale, (qmax - zp) * scale


def write_calibration_cache(
    path: Path,
    model: onnx.ModelProto,
    ranges: dict[str, tuple[float, float]],
    header: dict[str, Any],
) -> int:
    """Text table, one activation tensor a line: ``name<TAB>min<TAB>max<TAB>scale<TAB>zero_point``.

    ``min``/``max`` are the calibrated range (or, for a QAT graph, the range its scale and zero
    point imply); ``scale``/``zero_point`` are what the graph's QuantizeLinear uses ("-" for a
    calibrated tensor left FP32 by the fallback). Returns the number of tensor lines.
    """
    qparams = _qdq_tables(model)
    names = sorted(set(ranges) | set(qparams))
    lines = [f"# {k}: {v}" for k, v in header.items()]
    lines.append("# tensor\tmin\tmax\tscale\tzero_point")
    for name in names:
        lo, hi = ranges.get(name) or _implied_range(*qparams[name])
        if name in qparams:
            scale, zp, _ = qparams[name]
            lines.append(f"{name}\t{lo:.9g}\t{hi:.9g}\t{scale:.9g}\t{zp}")
        else:
            lines.append(f"{name}\t{lo:.9g}\t{hi:.9g}\t-\t-")
    path.write_text("\n".join(lines) + "\n")
    return len(names)


def read_calibration_cache(path: str | Path) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """(header, tensor -> (min, max)) of a ``calibration.cache``."""
    header: dict[str, str] = {}
    table: dict[str, tuple[float, float]] = {}
    for line in Path(path).read_text().splitlines():
        if line.startswith("# ") and ": " in line:
            k, v = line[2:].split(": ", 1)
            header[k] = v
        elif line and not line.startswith("#"):
            name, lo, hi, *_ = line.split("\t")
            table[name] = (float(lo), float(hi))
    return header, table


def _read_json_ranges(path: Path) -> dict[str, tuple[float, float]]:
    raw = json.loads(path.read_text())
    out = {}
    for name, td in raw.get("data", {}).items():
        lo, hi = td["lowest"]["data"], td["highest"]["data"]
        out[name] = (float(np.min(lo)), float(np.max(hi)))
    return out


def _count(model: onnx.ModelProto, ops: Sequence[str]) -> int:
    return sum(1 for n in model.graph.node if n.op_type in ops)


def build_int8_engine(
    onnx_fp32_path: str | Path,
    calibration_frames_uint8: np.ndarray,
    contract: Contract,
    out_dir: str | Path,
    config: Int8Config,
    runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime",
) -> Int8Build:
    """Quantize the FP32 export into ``out_dir/model.onnx`` + ``out_dir/calibration.cache``.

    ``calibration_frames_uint8``: [N, H, W, 3] RGB frames of the calibration shard (the first
    ``config.max_calibration_frames`` are used). ``runtime`` picks the activation scheme
    (``config.runtimes``): the TensorRT graph is symmetric int8 without int32 biases.
    """
    t0 = time.perf_counter()
    src, out = Path(onnx_fp32_path), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames = np.asarray(calibration_frames_uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"calibration frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    frames = frames[: config.max_calibration_frames]
    if len(frames) == 0:
        raise ValueError("no calibration frames")
    model_path, cache_path = out / INT8_MODEL_FILE, out / CALIBRATION_CACHE_FILE
    shard = shard_sha256(frames)
    rq = config.for_runtime(runtime)
    if contract.quantization_aware:
        return _qat_build(src, model_path, cache_path, runtime, rq.activation_type, shard, len(frames), t0)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    kwargs = _quant_kwargs(config, runtime)
    reader = _FramesReader(frames, contract, config.calibration_batch_size)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="int8-") as tmp_s:
        tmp = Path(tmp_s)
        pre, cache_json = tmp / "preprocessed.onnx", tmp / "ranges.json"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        pre_model = onnx.load(str(pre))
        excluded = _pattern_excluded(pre_model, config)
        node_errors: dict[str, float] = {}
        t_fb = time.perf_counter()
        if config.fallback.enabled:
            full = tmp / "full_int8.onnx"
            _quantize(pre, full, reader, cache_json, kwargs, sorted(excluded))
            probe = normalize(frames[: config.fallback.frames], contract.input.normalization)
            node_errors = _node_errors(pre, full, probe, tmp)
            for name, err in sorted(node_errors.items(), key=lambda kv: -kv[1]):
                if err > config.fallback.max_node_error and name not in excluded:
                    excluded[name] = (
                        f"fallback: isolated INT8 error {err:.3g} > bound {config.fallback.max_node_error:g}"
                    )
        fallback_s = time.perf_counter() - t_fb
        # Ranges are cached after the first pass: the final pass does not recalibrate.
        _quantize(
            pre, model_path, None if cache_json.exists() else reader, cache_json, kwargs, sorted(excluded)
        )
        ranges = _read_json_ranges(cache_json)
    model = onnx.load(str(model_path))
    quantized = quantized_compute_nodes(model)
    # ORT's nodes_to_exclude is honoured by name: check the graph really keeps them FP32.
    still_quantized = sorted(set(excluded) & set(quantized))
    if still_quantized:
        raise RuntimeError(f"nodes excluded from quantization still run in INT8: {still_quantized}")
    header = {
        "format": "adas-calibration-cache v1",
        "method": config.calibration_method,
        "runtime": runtime,
        "activation_type": rq.activation_type,
        "activation_symmetric": rq.activation_symmetric,
        "per_channel": config.per_channel,
        "frames": len(frames),
        "shard_sha256": shard,
        "excluded_nodes": len(excluded),
    }
    write_calibration_cache(cache_path, model, ranges, header)
    if config.fallback.enabled and not any(k.startswith("fallback") for k in excluded.values()):
        notes.append(f"no node exceeded the fallback bound {config.fallback.max_node_error:g}")
    return Int8Build(
        path=model_path,
        calibration_cache=cache_path,
        runtime=runtime,
        quantization_aware=False,
        calibration_method=config.calibration_method,
        per_channel=config.per_channel,
        activation_type=rq.activation_type,
        activation_symmetric=rq.activation_symmetric,
        calibration_frames=len(frames),
        shard_sha256=shard,
        excluded_nodes=dict(sorted(excluded.items())),
        node_errors=dict(sorted(node_errors.items())),
        quantized_nodes=len(quantized),
        qdq_nodes=_count(model, _QDQ),
        op_histogram=op_histogram(model),
        sha256=sha256_file(model_path),
        size_bytes=model_path.stat().st_size,
        build_seconds=time.perf_counter() - t0,
        fallback_seconds=fallback_s,
        notes=notes,
    )


def _qat_build(
    src: Path,
    model_path: Path,
    cache_path: Path,
    runtime: str,
    activation_type: str,
    shard: str,
    n_frames: int,
    t0: float,
) -> Int8Build:
    """A quantization-aware bundle: its exported Q/DQ graph is the engine; no recalibration."""
    model = onnx.load(str(src))
    if _count(model, _QDQ) == 0:
        raise ValueError(
            f"{src}: the contract says quantization_aware: true but the exported graph has no "
            "QuantizeLinear/DequantizeLinear nodes (was the bundle exported without its fake-quant modules?)"
        )
    shutil.copyfile(src, model_path)
    qparams = _qdq_tables(model)
    symmetric = all(zp == 0 for _, zp, _ in qparams.values())
    dtypes = sorted({dtype for _, _, dtype in qparams.values()})
    header = {
        "format": "adas-calibration-cache v1",
        "method": "quantization-aware training (scales from the bundle's Q/DQ nodes)",
        "runtime": runtime,
        "frames": 0,
        "shard_sha256": "n/a (no calibration run)",
    }
    write_calibration_cache(cache_path, model, {}, header)
    return Int8Build(
        path=model_path,
        calibration_cache=cache_path,
        runtime=runtime,
        quantization_aware=True,
        calibration_method="qat",
        per_channel=True,
        activation_type="/".join(dtypes) or activation_type,
        activation_symmetric=symmetric,
        calibration_frames=0,
        shard_sha256=shard,
        excluded_nodes={},
        node_errors={},
        quantized_nodes=len(quantized_compute_nodes(model)),
        qdq_nodes=_count(model, _QDQ),
        op_histogram=op_histogram(model),
        sha256=sha256_file(model_path),
        size_bytes=model_path.stat().st_size,
        build_seconds=time.perf_counter() - t0,
        fallback_seconds=0.0,
        notes=[
            f"quantization-aware bundle: the QAT model's own Q/DQ graph is used as is; the "
            f"{n_frames} calibration frames were not used"
        ],
    )
