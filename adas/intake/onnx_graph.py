"""An ONNX model file judged from its bytes alone: nothing in it runs here.

Used by intake (a bundle with ``model_format: onnx``, before the sandboxed smoke forward) and by
packaging (the graph a sandboxed export wrote, or an ONNX bundle's own graph). The checks, each
refusal a :class:`BundleRejected` naming the field and what the file actually has:

* a bounded size and a valid ONNX protobuf (``onnx.checker`` full check, with shape inference);
* every weight inside the file: no external-data reference (it could name any path);
* only standard operator domains (a custom op is native code of unknown origin), no local
  functions, and the standard opset at least ``min_opset`` (or exactly ``opset`` when given);
* the contract's inputs (image, then the source-size input when declared) and outputs by name,
  in order, with the declared element types, ranks, a dynamic batch and the declared fixed axes.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from adas.intake.contract import CONTRACT_FILE, Contract, TensorSpec
from adas.intake.files import BundleRejected

MIN_OPSET = 17
# protobuf cannot parse a single-file model over 2 GiB, and external data is refused.
MAX_ONNX_BYTES = 2 << 30
STANDARD_DOMAINS = ("", "ai.onnx")
ONNX_DTYPES = {
    "float32": onnx.TensorProto.FLOAT,
    "float16": onnx.TensorProto.FLOAT16,
    "uint8": onnx.TensorProto.UINT8,
    "int32": onnx.TensorProto.INT32,
    "int64": onnx.TensorProto.INT64,
}


def subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """``graph`` and every subgraph (If / Loop / Scan bodies) below it."""
    found = [graph]
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                found += subgraphs(sub)
    return found


def _tensors(graph: onnx.GraphProto) -> list[onnx.TensorProto]:
    tensors = list(graph.initializer) + [s.values for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            tensors += ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
    return tensors


def standard_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in STANDARD_DOMAINS), None)


def declared_inputs(contract: Contract) -> list[TensorSpec]:
    """The model's inputs as the contract declares them: the image, then the source size."""
    specs: list[TensorSpec] = [contract.input]
    size = contract.input.source_size
    if size is not None:
        specs.append(TensorSpec(name=size.name, shape=[-1, 2], dtype=size.dtype))
    return specs


def _check_value(field: str, value: onnx.ValueInfoProto, spec: TensorSpec) -> None:
    tensor = value.type.tensor_type
    if tensor.elem_type != ONNX_DTYPES[spec.dtype]:
        got = onnx.TensorProto.DataType.Name(tensor.elem_type)
        raise BundleRejected(
            field, f"{spec.name!r} is {got} in the model, the contract declares {spec.dtype}"
        )
    dims = list(tensor.shape.dim)
    if len(dims) != len(spec.shape):
        raise BundleRejected(
            field, f"{spec.name!r} has rank {len(dims)} in the model, the contract declares {spec.shape}"
        )
    # A symbolic axis is one the file does not pin down (not a contradiction): the sandboxed
    # smoke forward checks the real sizes.
    for axis, (dim, declared) in enumerate(zip(dims, spec.shape, strict=True)):
        fixed = dim.dim_value if dim.HasField("dim_value") else None
        if declared == -1 and axis == 0 and fixed is not None:
            raise BundleRejected(field, f"{spec.name!r} has a fixed batch of {fixed}, not a dynamic one")
        if declared != -1 and fixed is not None and fixed != declared:
            model_shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
            raise BundleRejected(
                field,
                f"{spec.name!r} axis {axis} is {fixed} in the model (shape {model_shape}), "
                f"the contract declares {declared} ({spec.shape})",
            )


def check_onnx_file(
    path: Path,
    contract: Contract,
    *,
    where: str | None = None,
    min_opset: int = MIN_OPSET,
    opset: int | None = None,
    max_bytes: int = MAX_ONNX_BYTES,
) -> onnx.ModelProto:
    """The model at ``path`` if every check above passes; ``where`` names the file in refusals
    (default: the contract's ``model_file``). Raises :class:`BundleRejected`."""
    path = Path(path)
    where = where or contract.model_file
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleRejected(where, f"is {size} bytes, over the {max_bytes}-byte limit of an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a protobuf parse error has no common base class
        raise BundleRejected(where, f"is not an ONNX model: {type(exc).__name__}") from exc
    for graph in subgraphs(model.graph):
        for tensor in _tensors(graph):
            if tensor.data_location == onnx.TensorProto.EXTERNAL or len(tensor.external_data):
                raise BundleRejected(where, f"tensor {tensor.name!r} refers to external data")
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                raise BundleRejected(
                    where,
                    f"node {node.name!r} uses op {node.op_type!r} of domain {node.domain!r}; "
                    "only standard ONNX operators are accepted",
                )
    domains = {o.domain: o.version for o in model.opset_import}
    custom = sorted(d for d in domains if d not in STANDARD_DOMAINS)
    if custom or model.functions:
        what = f"operator domains {custom}" if custom else f"{len(model.functions)} local functions"
        raise BundleRejected(where, f"imports {what}; only standard ONNX operators are accepted")
    found = standard_opset(model)
    if opset is not None and found != opset:
        raise BundleRejected(where, f"has opset {domains}, packaging asked for {opset}")
    if found is None or found < min_opset:
        raise BundleRejected(where, f"has opset {found}; ONNX bundles need opset >= {min_opset}")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise BundleRejected(where, f"onnx.checker rejected it: {str(exc)[:500]}") from exc
    initializers = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    specs = declared_inputs(contract)
    if [v.name for v in inputs] != [s.name for s in specs]:
        raise BundleRejected(
            f"{CONTRACT_FILE}: input.name",
            f"the model's inputs are {[v.name for v in inputs]}, the contract declares {[s.name for s in specs]}",
        )
    outputs = [v.name for v in model.graph.output]
    if outputs != [o.name for o in contract.outputs]:
        raise BundleRejected(
            f"{CONTRACT_FILE}: outputs",
            f"the model's outputs are {outputs}, the contract declares {[o.name for o in contract.outputs]}",
        )
    for value, spec in zip(inputs, specs, strict=True):
        _check_value(
            f"{CONTRACT_FILE}: input" if spec is contract.input else f"{CONTRACT_FILE}: input.source_size",
            value,
            spec,
        )
    for i, (value, out) in enumerate(zip(model.graph.output, contract.outputs, strict=True)):
        _check_value(f"{CONTRACT_FILE}: outputs[{i}].shape", value, out)
    return model
