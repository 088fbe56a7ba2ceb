"""PyTorch program -> ONNX, checked and fingerprinted.

``torch.onnx.export(..., dynamo=False)`` (the TorchScript exporter: the dynamo exporter needs
``onnxscript``, which the project does not ship) with the contract's input/output names and a
dynamic batch axis. The graph is then:

* renamed: a ``torch.export`` program loses its module hierarchy, so nodes come out as
  ``/Conv_20``; they are renamed after the parameters they use (``/heatmap/out/Conv``) so
  that INT8 fallback patterns, coverage errors and calibration tables speak in model terms;
* checked with ``onnx.checker`` (full check, with shape inference);
* run once in ONNX Runtime against the torch module on a batch of a size different from the
  export example (proves the dynamic axis), recording the max abs difference.

The candidate's module is untrusted code: :func:`export_onnx` runs only inside the packaging
sandbox (:mod:`adas.packaging.model_worker`). What comes out of it is untrusted too, and the
parent accepts the graph only through :func:`validate_exported_graph` (checker, no external data,
standard operator domains only, inputs and outputs exactly as the contract declares them), then
describes it with :func:`graph_result` from the bytes it holds, not from what the worker said.
"""

from __future__ import annotations

import collections
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from adas.detector.preprocess import normalize
from adas.intake.contract import Contract
from adas.intake.files import BundleRejected
from adas.intake.onnx_graph import check_onnx_file, standard_opset
from adas.packaging.operators import UnsupportedOperatorError
from adas.storage import sha256_file

if TYPE_CHECKING:
    from torch import nn

DEFAULT_OPSET = 17
_BATCH_AXIS = "batch"
# Export example batch 2 (a size-1 trace could specialize on it); the sanity run uses 3.
_EXPORT_BATCH = 2
_SANITY_BATCH = 3


UNSUPPORTED_OPERATOR_HINT = (
    "replace it with supported ops in the model, or raise packaging.onnx.opset if a newer opset supports it"
)


class ExportError(RuntimeError):
    """The exported graph is invalid or does not reproduce the torch module."""


class UnsupportedExportOperator(UnsupportedOperatorError, ExportError):
    """ONNX export met an operator it cannot express at the configured opset: every target
    needs the ONNX graph, so the export (not one cell) fails, naming operator, where, target, hint."""

    detail: str = ""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    opset: int
    ir_version: int
    producer: str
    node_count: int
    op_histogram: dict[str, int]
    sha256: str
    size_bytes: int
    input_name: str
    output_names: list[str]
    max_abs_diff: float
    export_seconds: float
    renamed_nodes: int = 0
    notes: list[str] = field(default_factory=list)

    def to_metadata(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op type -> node count; custom-domain ops are keyed ``domain::Op``."""
    counts = collections.Counter(
        n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}" for n in model.graph.node
    )
    return dict(sorted(counts.items()))


def _param_prefix(name: str) -> str | None:
    """``heatmap.out.weight`` -> ``/heatmap/out``; None for names that are not parameters."""
    m = re.fullmatch(r"([A-Za-z_][\w.]*)\.(weight|bias|running_mean|running_var)", name)
    return "/" + m.group(1).replace(".", "/") if m else None


def name_nodes_after_parameters(model: onnx.ModelProto) -> int:
    """Rename nodes (and their intermediate output tensors) after the parameters they use.

    A node with a parameter input ``a.b.weight`` becomes ``/a/b/<Op>``; a parameter-free node
    fed by a renamed node inherits its scope (``/a/b/Relu``). Graph inputs/outputs keep their
    contract names. Returns how many nodes were renamed. In place.
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    # Constants never define a scope: a Resize reading a scale Constant is still in its data's scope.
    consts = inits | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    io_names = {v.name for v in g.input} | {v.name for v in g.output}
    scope_of_tensor: dict[str, str] = {}
    used: set[str] = set()
    tensor_map: dict[str, str] = {}
    renamed = 0
    for node in g.node:
        scope = None
        params = [i for i in node.input if i in inits and _param_prefix(i)]
        weights = [i for i in params if i.endswith(".weight")]
        if weights or params:
            scope = _param_prefix((weights or params)[0])
        else:
            data = [i for i in node.input if i and i not in consts]
            scopes = {scope_of_tensor.get(i) for i in data}
            # Only when every data input comes from one scope (a residual Add joins two: unnamed).
            if len(scopes) == 1 and None not in scopes:
                scope = scopes.pop()
        if scope is None or node.op_type in ("Constant", "Identity"):
            used.add(node.name)
            continue
        base = f"{scope}/{node.op_type}"
        new, k = base, 1
        while new in used:
            new, k = f"{base}_{k}", k + 1
        used.add(new)
        if new != node.name:
            node.name = new
            renamed += 1
        for j, out in enumerate(node.output):
            scope_of_tensor[out] = scope
            if out and out not in io_names:
                tensor_map[out] = f"{new}_output_{j}"
    if tensor_map:
        for node in g.node:
            node.input[:] = [tensor_map.get(i, i) for i in node.input]
            node.output[:] = [tensor_map.get(o, o) for o in node.output]
        for vi in g.value_info:
            vi.name = tensor_map.get(vi.name, vi.name)
    return renamed


_UNSUPPORTED_OP = re.compile(r"operator '([^']+)'")


def export_failure(exc: Exception, opset: int, module: Any = None, example: Any = None) -> ExportError:
    """A failed ``torch.onnx.export`` as one readable error: the operator, the node and module
    path that use it (from the program's own graph, or by tracing the model), the target and a hint."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    op_match = _UNSUPPORTED_OP.search(text)
    if not op_match:
        return ExportError(f"ONNX export (opset {opset}) failed: {type(exc).__name__}: {first[:300]}")
    try:
        where = _scope_of(op_match.group(1), module, example)
    except Exception:  # naming the place is a courtesy; the operator is named regardless
        where = ""
    return unsupported_export_operator(op_match.group(1), where, opset, first[:200])


def unsupported_export_operator(
    operator: str, where: str, opset: int, detail: str = ""
) -> UnsupportedExportOperator:
    """The typed error for ``operator`` (used at ``where``) that ONNX opset ``opset`` cannot express;
    ``detail`` is the exporter's own sentence."""
    target = f"ONNX opset {opset}"
    error = UnsupportedExportOperator(
        f"ONNX export failed: operator {operator}{f' in {where}' if where else ''} is not supported "
        f"by target {target}; hint: {UNSUPPORTED_OPERATOR_HINT}" + (f" ({detail})" if detail else ""),
        operator=operator,
        where=where,
        target=target,
        hint=UNSUPPORTED_OPERATOR_HINT,
    )
    error.detail = detail
    return error


def _scope_of(op: str, module: Any, example: Any) -> str:
    """Where the model uses ``op``: the graph node and module path of its first use (empty when
    it cannot be found). A ``torch.export`` program keeps each node's module stack; any other
    module is traced, and the trace records each node's scope."""
    if module is None:
        return ""
    fx_where = _fx_scope_of(op, module)
    if fx_where or example is None:
        return fx_where
    import torch  # already loaded by the export that failed

    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, (example,), check_trace=False, strict=False)
    except Exception:
        return ""
    # A TorchScript module's type is RecursiveScriptModule; its author's class is original_name.
    owner = getattr(module, "original_name", None) or type(module).__name__
    for node in traced.inlined_graph.nodes():
        if node.kind() == op:
            # "__module.backbone/__module.backbone.stage2" -> "backbone.stage2"; empty at the root
            # (a scripted root shows as its qualified class, "pkg.Model::").
            path = node.scopeName().split("/")[-1].removeprefix("__module").lstrip(".")
            path = "" if path.endswith("::") else path
            return f"module {path} ({owner})" if path else f"{owner}.forward"
    return ""


def _fx_scope_of(op: str, module: Any) -> str:
    """``node cummax in module head (Head)`` for ``aten::cummax`` in a ``torch.export`` program."""
    import torch.fx  # already loaded by the export that failed

    if not isinstance(module, torch.fx.GraphModule):
        return ""
    wanted = op.replace("::", ".")
    for node in module.graph.nodes:
        if getattr(node, "op", "") != "call_function" or not str(node.target).startswith(wanted + "."):
            continue
        stack = getattr(node, "meta", {}).get("nn_module_stack") or {}
        path, kind = next(reversed(stack.values()), ("", ""))
        owner = str(kind).rsplit(".", 1)[-1] or type(module).__name__
        return (
            f"node {node.name} in module {path} ({owner})" if path else f"node {node.name} in {owner}.forward"
        )
    return ""


def export_onnx(
    module: nn.Module,
    contract: Contract,
    out_path: str | Path,
    opset: int = DEFAULT_OPSET,
    sanity_input: np.ndarray | None = None,
    max_abs_diff_tolerance: float | None = 1e-4,
) -> ExportResult:
    """Export ``module`` to ONNX at ``out_path`` per the contract; check it and compare with torch.

    ``sanity_input`` (normalized float32 [B, C, H, W]) defaults to a seeded batch of 3 over
    the contract's normalized pixel range. Raises ``ExportError`` when the checker fails or
    the ORT outputs differ from torch by more than ``max_abs_diff_tolerance`` (None: record only).
    """
    # torch is imported here, not at module level: engines and the latency child reuse this
    # module's helpers and must not load torch (its OpenMP pool would share the cores).
    import onnxruntime as ort
    import torch

    out_path = Path(out_path)
    if not out_path.parent.is_dir():  # in the sandbox, even an existing scratch dir may not be mkdir'ed
        out_path.parent.mkdir(parents=True)
    _, c, h, w = contract.input.shape
    input_name = contract.input.name
    output_names = [o.name for o in contract.outputs]
    module = module.eval()
    example = torch.zeros(_EXPORT_BATCH, c, h, w)
    dynamic_axes = {n: {0: _BATCH_AXIS} for n in [input_name, *output_names]}
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            torch.onnx.export(
                module,
                (example,),
                str(out_path),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=output_names,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
    except Exception as exc:
        raise export_failure(exc, opset, module, example) from exc
    model = onnx.load(str(out_path))
    renamed = name_nodes_after_parameters(model)
    onnx.save(model, str(out_path))
    export_seconds = time.perf_counter() - t0
    try:
        onnx.checker.check_model(str(out_path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"{out_path}: onnx.checker rejected the exported graph: {exc}") from exc

    x = sanity_input if sanity_input is not None else _sanity_batch(contract)
    with torch.no_grad():
        ref = module(torch.from_numpy(x))
    ref = ref if isinstance(ref, (tuple, list)) else [ref]
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(out_path), so, providers=["CPUExecutionProvider"])
    got = sess.run(output_names, {input_name: x})
    diff = max(float(np.max(np.abs(r.numpy() - g))) for r, g in zip(ref, got, strict=True))
    if max_abs_diff_tolerance is not None and not diff <= max_abs_diff_tolerance:
        raise ExportError(
            f"{out_path}: ONNX Runtime differs from the torch module by {diff:.3g} "
            f"(max abs, batch {x.shape[0]}), over the {max_abs_diff_tolerance:g} sanity bound"
        )
    return graph_result(
        out_path, model, contract, max_abs_diff=diff, export_seconds=export_seconds, renamed_nodes=renamed
    )


def graph_result(
    path: Path,
    model: onnx.ModelProto,
    contract: Contract,
    *,
    max_abs_diff: float,
    export_seconds: float,
    renamed_nodes: int,
) -> ExportResult:
    """The facts of the graph at ``path`` (``model`` is its loaded proto), hashed from the file."""
    return ExportResult(
        path=path,
        opset=standard_opset(model) or 0,
        ir_version=int(model.ir_version),
        producer=f"{model.producer_name} {model.producer_version}".strip(),
        node_count=len(model.graph.node),
        op_histogram=op_histogram(model),
        sha256=sha256_file(path)[0],
        size_bytes=path.stat().st_size,
        input_name=contract.input.name,
        output_names=[o.name for o in contract.outputs],
        max_abs_diff=max_abs_diff,
        export_seconds=export_seconds,
        renamed_nodes=renamed_nodes,
    )


# --------------------------------------------------------------------------- parent side


def validate_exported_graph(path: Path, contract: Contract, opset: int) -> onnx.ModelProto:
    """The graph a sandboxed export wrote, accepted only if it is what a clean export produces:
    :func:`adas.intake.onnx_graph.check_onnx_file` (no external data, standard operator domains
    only at exactly ``opset``, ``onnx.checker`` full, inputs and outputs exactly the contract's).
    Raises :class:`ExportError` naming what is wrong."""
    try:
        return check_onnx_file(path, contract, where=path.name, min_opset=opset, opset=opset)
    except BundleRejected as exc:
        raise ExportError(f"exported graph: {exc.reason}") from exc


def _sanity_batch(contract: Contract, batch: int = _SANITY_BATCH, seed: int = 0) -> np.ndarray:
    """Uniform pixels [0, 255] pushed through the contract's normalization."""
    _, _, h, w = contract.input.shape
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(batch, h, w, 3), dtype=np.uint8)
    return normalize(frames, contract.input.normalization)
