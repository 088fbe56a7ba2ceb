"""Operator coverage of an ONNX graph per runtime, checked before any engine is built.

``onnxruntime``: ONNX Runtime's own kernel registry. ``get_all_opkernel_def()`` lists every
kernel compiled into the installed wheel with its provider, domain and opset version range;
a node is covered when a ``CPUExecutionProvider`` kernel exists for its (domain, op type) at
the model's opset for that domain. ``Constant`` needs no kernel (ORT turns it into an
initializer at load), and an ONNX function op without a kernel is covered when ONNX defines
a function body for it (ORT inlines it). Creating the ``InferenceSession`` remains the final
word; every ORT engine build does that right after this check.

``tensorrt``: TensorRT cannot be imported here (no GPU in CI), so its coverage is a static
table: the ops marked "Y" in onnx-tensorrt's ``docs/operators.md`` at tag ``release/10.1-GA``
(commit 96e7811, June 2024; its header reads "TensorRT 10.0 supports operators in the inclusive
range of opset 9 to opset 20"), plus the documented Q/DQ restriction that zero points must be 0.
Refresh the table when the TensorRT major version of the GPU pools changes.
"""

from __future__ import annotations

import collections
import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import numpy_helper

RuntimeName = Literal["onnxruntime", "tensorrt"]
_DEFAULT_DOMAINS = ("", "ai.onnx")

TENSORRT_TABLE_SOURCE = (
    "onnx-tensorrt docs/operators.md @ release/10.1-GA (96e7811, 2024-06-17): TensorRT 10.0, opsets 9-20"
)
TENSORRT_OPSET_RANGE = (9, 20)
# Ops marked supported ("Y") in that table, default ONNX domain only.
TENSORRT_SUPPORTED_OPS: frozenset[str] = frozenset(
    {
        'Abs', 'Acos', 'Acosh', 'Add', 'And', 'ArgMax', 'ArgMin', 'Asin', 'Asinh', 'Atan', 'Atanh',
        'AveragePool', 'BatchNormalization', 'Cast', 'CastLike', 'Ceil', 'Celu', 'Clip', 'Concat',
        'Constant', 'ConstantOfShape', 'Conv', 'ConvTranspose', 'Cos', 'Cosh', 'CumSum',
        'DeformConv', 'DepthToSpace', 'DequantizeLinear', 'Div', 'Dropout', 'Einsum', 'Elu',
        'Equal', 'Erf', 'Exp', 'Expand', 'EyeLike', 'Flatten', 'Floor', 'Gather', 'GatherElements',
        'GatherND', 'Gelu', 'Gemm', 'GlobalAveragePool', 'GlobalLpPool', 'GlobalMaxPool', 'Greater',
        'GreaterOrEqual', 'GridSample', 'GroupNormalization', 'GRU', 'HardSigmoid', 'HardSwish',
        'Hardmax', 'Identity', 'If', 'ImageScaler', 'InstanceNormalization', 'IsInf', 'IsNaN',
        'LayerNormalization', 'LeakyRelu', 'Less', 'LessOrEqual', 'Log', 'LogSoftmax', 'Loop',
        'LRN', 'LSTM', 'LpNormalization', 'LpPool', 'MatMul', 'Max', 'MaxPool', 'Mean',
        'MeanVarianceNormalization', 'Min', 'Mish', 'Mod', 'Mul', 'Neg', 'NonMaxSuppression',
        'NonZero', 'Not', 'OneHot', 'Or', 'Pad', 'ParametricSoftplus', 'Pow', 'PRelu',
        'QuantizeLinear', 'RandomNormal', 'RandomNormalLike', 'RandomUniform', 'RandomUniformLike',
        'Range', 'Reciprocal', 'ReduceL1', 'ReduceL2', 'ReduceLogSum', 'ReduceLogSumExp',
        'ReduceMax', 'ReduceMean', 'ReduceMin', 'ReduceProd', 'ReduceSum', 'ReduceSumSquare',
        'Relu', 'Reshape', 'Resize', 'ReverseSequence', 'RNN', 'RoiAlign', 'Round', 'ScaledTanh',
        'Scan', 'Scatter', 'ScatterElements', 'ScatterND', 'Selu', 'Shape', 'Shrink', 'Sigmoid',
        'Sign', 'Sin', 'Sinh', 'Size', 'Slice', 'Softmax', 'Softplus', 'Softsign', 'SpaceToDepth',
        'Split', 'Sqrt', 'Squeeze', 'Sub', 'Sum', 'Tan', 'Tanh', 'ThresholdedRelu', 'Tile', 'TopK',
        'Transpose', 'Trilu', 'Unsqueeze', 'Upsample', 'Where', 'Xor',
    }
)  # fmt: skip


class UnsupportedOperatorError(RuntimeError):
    """An operator a target cannot handle: ``operator``, ``where`` (the node or module path that
    uses it), ``target`` and a ``hint``, all in the message too. Raised by the ONNX export (every
    target fails: see ``adas.packaging.export.UnsupportedExportOperator``) and per target cell by
    :func:`require_supported_ops` (that cell fails, the other targets are built as usual)."""

    def __init__(self, message: str, *, operator: str, where: str, target: str, hint: str) -> None:
        super().__init__(message)
        self.operator = operator
        self.where = where
        self.target = target
        self.hint = hint


@dataclass(frozen=True)
class UnsupportedNode:
    node: str
    op_type: str
    domain: str
    reason: str


@dataclass(frozen=True)
class OpCoverage:
    op_type: str
    domain: str
    count: int
    supported: bool
    note: str = ""


@dataclass(frozen=True)
class CoverageReport:
    runtime: str
    model: str
    method: str
    opsets: dict[str, int]
    ops: list[OpCoverage]
    unsupported: list[UnsupportedNode] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return not self.unsupported

    @property
    def coverage(self) -> float:
        """Fraction of nodes whose op is supported."""
        total = sum(o.count for o in self.ops)
        return 1.0 if total == 0 else 1.0 - len(self.unsupported) / total

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self) | {"supported": self.supported, "coverage": self.coverage}

    def markdown(self) -> str:
        rows = ["| op | domain | nodes | supported | note |", "|---|---|---|---|---|"]
        rows += [
            f"| {o.op_type} | {o.domain or 'ai.onnx'} | {o.count} | {'yes' if o.supported else '**no**'} | {o.note} |"
            for o in self.ops
        ]
        return "\n".join(rows)


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in model.opset_import}


@functools.cache
def ort_cpu_kernels() -> dict[tuple[str, str], tuple[tuple[int, int], ...]]:
    """(domain, op type) -> opset version ranges of the installed ORT's CPU kernels."""
    from onnxruntime.capi import _pybind_state as C

    table: dict[tuple[str, str], list[tuple[int, int]]] = collections.defaultdict(list)
    for k in C.get_all_opkernel_def():
        if k.provider == "CPUExecutionProvider":
            dom = "" if k.domain == "ai.onnx" else k.domain
            table[(dom, k.op_name)].append((int(k.version_range[0]), int(k.version_range[1])))
    return {key: tuple(v) for key, v in table.items()}


def _onnx_function_op(op_type: str, domain: str, opset: int) -> bool:
    try:
        schema = onnx.defs.get_schema(op_type, opset, domain)
    except onnx.defs.SchemaError:
        return False
    return bool(schema.has_function or schema.has_context_dependent_function)


def _ort_check(node: onnx.NodeProto, opsets: dict[str, int]) -> tuple[bool, str]:
    dom = "" if node.domain == "ai.onnx" else node.domain
    if dom == "" and node.op_type == "Constant":
        return True, "folded into an initializer at load"
    opset = opsets.get(dom)
    if opset is None:
        return False, f"domain {dom!r} is not imported by the model"
    ranges = ort_cpu_kernels().get((dom, node.op_type))
    if ranges and any(lo <= opset <= hi for lo, hi in ranges):
        return True, ""
    if ranges:
        spans = ", ".join(f"{lo}-{hi}" for lo, hi in ranges)
        return False, f"CPU kernels exist for opsets {spans}, not {opset}"
    if dom == "" and _onnx_function_op(node.op_type, dom, opset):
        return True, "no kernel; runs as its ONNX function body"
    where = f" in domain {dom!r}" if dom else ""
    return False, f"no CPU kernel registered{where}"


def _zero_point_ok(node: onnx.NodeProto, inits: dict[str, onnx.TensorProto]) -> tuple[bool, str]:
    if len(node.input) < 3 or not node.input[2]:
        return True, ""
    zp = inits.get(node.input[2])
    if zp is None:
        return False, "zero point is not a constant"
    arr = numpy_helper.to_array(zp)
    if arr.dtype != np.int8:
        return False, f"zero point is {arr.dtype}, TensorRT quantizes to int8 only"
    if np.any(arr != 0):
        return False, "zero point must be 0 (symmetric quantization)"
    return True, ""


def _trt_check(
    node: onnx.NodeProto, opsets: dict[str, int], inits: dict[str, onnx.TensorProto]
) -> tuple[bool, str]:
    dom = "" if node.domain == "ai.onnx" else node.domain
    if dom != "":
        return False, f"custom domain {dom!r}; no TensorRT plugin is registered for it"
    if node.op_type not in TENSORRT_SUPPORTED_OPS:
        return False, "not in the onnx-tensorrt operator table"
    if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
        return _zero_point_ok(node, inits)
    return True, ""


def coverage_report(onnx_path: str | Path, runtime: RuntimeName | str) -> CoverageReport:
    """Per op type: node count and whether ``runtime`` can execute it (see module docstring)."""
    model = onnx.load(str(onnx_path), load_external_data=False)
    opsets = _opsets(model)
    inits = {i.name: i for i in model.graph.initializer}
    unsupported: list[UnsupportedNode] = []
    per_op: dict[tuple[str, str], list[tuple[bool, str]]] = collections.defaultdict(list)
    if runtime == "onnxruntime":
        import onnxruntime

        method = (
            f"onnxruntime {onnxruntime.__version__} kernel registry "
            "(CPUExecutionProvider, get_all_opkernel_def)"
        )
    elif runtime == "tensorrt":
        method = f"static table: {TENSORRT_TABLE_SOURCE}"
        lo, hi = TENSORRT_OPSET_RANGE
        if not lo <= opsets.get("", 0) <= hi:
            hint = f"export at an opset in {lo}-{hi} (packaging.onnx.opset)"
            raise UnsupportedOperatorError(
                f"{onnx_path}: opset {opsets.get('')} is outside TensorRT's parser range {lo}-{hi}; hint: {hint}",
                operator=f"opset {opsets.get('')}",
                where="the whole graph",
                target="tensorrt",
                hint=hint,
            )
    else:
        raise ValueError(f"unknown runtime {runtime!r}: expected 'onnxruntime' or 'tensorrt'")
    for node in model.graph.node:
        ok, why = _ort_check(node, opsets) if runtime == "onnxruntime" else _trt_check(node, opsets, inits)
        dom = "" if node.domain == "ai.onnx" else node.domain
        per_op[(dom, node.op_type)].append((ok, why))
        if not ok:
            unsupported.append(
                UnsupportedNode(node.name or f"<unnamed {node.op_type}>", node.op_type, dom, why)
            )
    ops = []
    for (dom, op), results in sorted(per_op.items()):
        notes = sorted({w for _, w in results if w})
        ops.append(OpCoverage(op, dom, len(results), all(ok for ok, _ in results), "; ".join(notes)))
    return CoverageReport(runtime, str(onnx_path), method, opsets, ops, unsupported)


def operator_hint(runtime: str, unsupported: list[UnsupportedNode]) -> str:
    """What the model's owner can do about ``unsupported`` on ``runtime``."""
    ops = ", ".join(sorted({u.op_type for u in unsupported}))
    if any(u.domain for u in unsupported):
        return (
            f"{ops} belong to a custom operator domain, which no runtime runs without a plugin: export "
            "the model with standard ONNX operators"
        )
    if runtime == "tensorrt" and all("zero point" in u.reason for u in unsupported):
        return "TensorRT takes symmetric int8 Q/DQ only: build this cell from the TensorRT INT8 flavour"
    if runtime == "tensorrt":
        return (
            f"replace {ops} in the model with operators in TensorRT's table ({TENSORRT_TABLE_SOURCE}), or "
            "take this target out of the model's rollout; the other targets are built as usual"
        )
    return (
        f"replace {ops} in the model with operators ONNX Runtime's CPU provider implements at the "
        "graph's opset, or change packaging.onnx.opset; the other targets are built as usual"
    )


def require_supported_ops(report: CoverageReport, target: str | None = None) -> CoverageReport:
    """Raise ``UnsupportedOperatorError`` naming every offending node, the target (``target``,
    e.g. the cell ``t4/fp16``; the runtime by default) and a hint; returns the report if clean."""
    if report.supported:
        return report
    target = target or report.runtime
    lines = [
        f"node '{u.node}' uses op '{u.op_type}' which {report.runtime} does not support ({u.reason})"
        for u in report.unsupported
    ]
    head = (
        lines[0]
        if len(lines) == 1
        else f"{len(lines)} nodes use unsupported operators:\n  " + "\n  ".join(lines)
    )
    hint = operator_hint(report.runtime, report.unsupported)
    first = report.unsupported[0]
    raise UnsupportedOperatorError(
        f"target {target}: {head}\nhint: {hint}\n[{report.model}; {report.method}]",
        operator=first.op_type,
        where=f"node {first.node}",
        target=target,
        hint=hint,
    )
