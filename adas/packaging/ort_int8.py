"""The calibrated INT8 engine for ONNX Runtime (and the Q/DQ graph TensorRT builds from).

ONNX Runtime static quantization in the Q/DQ format (the format TensorRT consumes too),
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
The graph analysis (which node runs in INT8, the isolated-error graph, the cache table) is in
:mod:`adas.packaging.qdq_graph`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from adas.cpu_isa import Isa
from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract
from adas.intake.feeds import model_feeds
from adas.packaging.config import Int8Config, Int8Recipe
from adas.packaging.export import op_histogram
from adas.packaging.ort_session import session_options
from adas.packaging.qdq_graph import (
    QDQ_OPS,
    count_ops,
    isolated_error_model,
    qdq_tables,
    quantized_compute_nodes,
    write_calibration_cache,
)
from adas.storage import sha256_file

INT8_MODEL_FILE = "model.onnx"
CALIBRATION_CACHE_FILE = "calibration.cache"


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
    # The target's instruction set (targets.yaml) and the 7-bit weights it decided.
    target_isa: str | None
    reduce_range: bool
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
    """CalibrationDataReader over uint8 source frames, placed and normalized as the contract's
    input says (stretch or letterbox, channel order), in batches."""

    def __init__(self, frames: np.ndarray, contract: Contract, batch: int) -> None:
        self._frames, self._contract, self._batch = frames, contract, batch
        self._it: Iterator[dict[str, np.ndarray]] = self._gen()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for s in range(0, len(self._frames), self._batch):
            x, geometry = preprocess(self._frames[s : s + self._batch], self._contract.input)
            yield model_feeds(self._contract.input, x, geometry.source_hw)

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


def _quant_kwargs(config: Int8Config, rq: Int8Recipe) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

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


# Operators that carry learned weights: INT8's speed is in their kernels.
_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm"})


def decode_tail(model: onnx.ModelProto) -> set[str]:
    """Nodes after the network's last weighted layer on every path, and the layers feeding them: an
    in-graph decode (sigmoid, peak tests, top-K, gathers, box arithmetic, the concatenation of
    boxes, scores and labels into one output). Quantizing them gains no kernel time and ruins them: one INT8 scale over a packed
    ``[x1, y1, x2, y2, score, label]`` row rounds every score of a 384-px frame to 0 or 3 (measured
    on centernet-e2e: mAP drop 49 points). A model whose outputs are its last convs has no tail."""
    consumers: dict[str, list[int]] = {}
    nodes = list(model.graph.node)
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    # ONNX keeps nodes in topological order: walking it backwards, every consumer is decided first.
    reaches_weights = [False] * len(nodes)
    for i in range(len(nodes) - 1, -1, -1):
        reaches_weights[i] = any(
            nodes[c].op_type in _WEIGHTED_OPS or reaches_weights[c]
            for out in nodes[i].output
            for c in consumers.get(out, [])
        )
    tail = {i for i, node in enumerate(nodes) if node.op_type not in _WEIGHTED_OPS and not reaches_weights[i]}
    # The weighted layers feeding the tail stay FP32 too: the decode compares and ranks their values
    # (3x3 peak tests, top-K), and INT8 steps turn neighbours into ties, i.e. duplicate peaks that no
    # NMS removes afterwards (centernet-e2e: mAP drop 4.2 points with them INT8, see BENCHMARKS).
    boundary = {
        i
        for i, node in enumerate(nodes)
        if node.op_type in _WEIGHTED_OPS
        and any(c in tail for out in node.output for c in consumers.get(out, []))
    }
    return {nodes[i].name for i in tail | boundary if nodes[i].name}


def _pattern_excluded(model: onnx.ModelProto, config: Int8Config) -> dict[str, str]:
    out: dict[str, str] = {
        name: "FP32: in-graph decode (after or feeding it from the last weighted layer)"
        for name in sorted(decode_tail(model))
    }
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


def _node_errors(
    fp32_path: Path, qdq_path: Path, feeds: dict[str, np.ndarray], workdir: Path
) -> dict[str, float]:
    """Isolated noise-to-signal ratio of every quantized node: rms(q - f) / std(f)."""
    import onnxruntime as ort

    fp32, qdq = onnx.load(str(fp32_path)), onnx.load(str(qdq_path))
    model, pairs = isolated_error_model(fp32, qdq)
    path = workdir / "isolated_errors.onnx"
    onnx.save(model, str(path))
    sess = ort.InferenceSession(
        str(path), session_options(optimization="basic"), providers=["CPUExecutionProvider"]
    )
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(names, feeds), strict=True))
    errors = {}
    for node, (ref_name, iso_name) in pairs.items():
        f = values[ref_name].astype(np.float64)
        q = values[iso_name].astype(np.float64)
        errors[node] = float(np.sqrt(np.mean((q - f) ** 2)) / max(float(np.std(f)), 1e-12))
    return errors


def _read_json_ranges(path: Path) -> dict[str, tuple[float, float]]:
    raw = json.loads(path.read_text())
    out = {}
    for name, td in raw.get("data", {}).items():
        lo, hi = td["lowest"]["data"], td["highest"]["data"]
        out[name] = (float(np.min(lo)), float(np.max(hi)))
    return out


def build_int8_engine(
    onnx_fp32_path: str | Path,
    calibration_frames_uint8: np.ndarray,
    contract: Contract,
    out_dir: str | Path,
    config: Int8Config,
    runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime",
    target_isa: Isa | None = None,
) -> Int8Build:
    """Quantize the FP32 export into ``out_dir/model.onnx`` + ``out_dir/calibration.cache``.

    ``calibration_frames_uint8``: [N, H, W, 3] RGB frames of the calibration shard (the first
    ``config.max_calibration_frames`` are used). ``runtime`` picks the activation scheme
    (``config.runtimes``): the TensorRT graph is symmetric int8 without int32 biases.
    ``target_isa`` (the target's ``isa`` in targets.yaml) decides ``reduce_range``
    (:meth:`Int8Config.recipe`); ``None`` gets the recipe that is right on every CPU.
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
    rq = config.recipe(runtime, target_isa)
    if contract.quantization_aware:
        return _qat_build(src, model_path, cache_path, rq, shard, len(frames), t0)

    from onnxruntime.quantization.shape_inference import quant_pre_process

    kwargs = _quant_kwargs(config, rq)
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
            probe, geometry = preprocess(frames[: config.fallback.frames], contract.input)
            node_errors = _node_errors(pre, full, model_feeds(contract.input, probe, geometry.source_hw), tmp)
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
        "reduce_range": rq.reduce_range,
        "target_isa": target_isa,
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
        target_isa=target_isa,
        reduce_range=rq.reduce_range,
        calibration_frames=len(frames),
        shard_sha256=shard,
        excluded_nodes=dict(sorted(excluded.items())),
        node_errors=dict(sorted(node_errors.items())),
        quantized_nodes=len(quantized),
        qdq_nodes=count_ops(model, QDQ_OPS),
        op_histogram=op_histogram(model),
        sha256=sha256_file(model_path)[0],
        size_bytes=model_path.stat().st_size,
        build_seconds=time.perf_counter() - t0,
        fallback_seconds=fallback_s,
        notes=notes,
    )


def _qat_build(
    src: Path,
    model_path: Path,
    cache_path: Path,
    rq: Int8Recipe,
    shard: str,
    n_frames: int,
    t0: float,
) -> Int8Build:
    """A quantization-aware bundle: its exported Q/DQ graph is the engine; no recalibration."""
    model = onnx.load(str(src))
    if count_ops(model, QDQ_OPS) == 0:
        raise ValueError(
            f"{src}: the contract says quantization_aware: true but the exported graph has no "
            "QuantizeLinear/DequantizeLinear nodes (was the bundle exported without its fake-quant modules?)"
        )
    shutil.copyfile(src, model_path)
    qparams = qdq_tables(model)
    symmetric = all(zp == 0 for _, zp, _ in qparams.values())
    dtypes = sorted({dtype for _, _, dtype in qparams.values()})
    header = {
        "format": "adas-calibration-cache v1",
        "method": "quantization-aware training (scales from the bundle's Q/DQ nodes)",
        "runtime": rq.runtime,
        "target_isa": rq.target_isa,
        "frames": 0,
        "shard_sha256": "n/a (no calibration run)",
    }
    write_calibration_cache(cache_path, model, {}, header)
    return Int8Build(
        path=model_path,
        calibration_cache=cache_path,
        runtime=rq.runtime,
        quantization_aware=True,
        calibration_method="qat",
        per_channel=True,
        activation_type="/".join(dtypes) or rq.activation_type,
        activation_symmetric=symmetric,
        target_isa=rq.target_isa,
        reduce_range=False,  # the bundle's own scales: nothing is re-quantized
        calibration_frames=0,
        shard_sha256=shard,
        excluded_nodes={},
        node_errors={},
        quantized_nodes=len(quantized_compute_nodes(model)),
        qdq_nodes=count_ops(model, QDQ_OPS),
        op_histogram=op_histogram(model),
        sha256=sha256_file(model_path)[0],
        size_bytes=model_path.stat().st_size,
        build_seconds=time.perf_counter() - t0,
        fallback_seconds=0.0,
        notes=[
            f"quantization-aware bundle: the QAT model's own Q/DQ graph is used as is; the "
            f"{n_frames} calibration frames were not used"
        ],
    )
