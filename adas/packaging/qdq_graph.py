"""Q/DQ graphs read as a runtime executes them: which node runs in INT8, each quantized node
isolated against its FP32 original, and the ``calibration.cache`` table of tensor ranges."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from onnx import helper, numpy_helper

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _is_qdq(node: onnx.NodeProto) -> bool:
    return node.op_type in QDQ_OPS


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


def isolated_error_model(
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
        # Every output of the node is kept (TopK has values and indices); the first is compared.
        iso_outputs = [f"{prefix}{o}" if o else "" for o in node.output]
        iso = helper.make_node(
            node.op_type, new_inputs, iso_outputs, name=f"{prefix}{name}", domain=node.domain
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


def qdq_tables(model: onnx.ModelProto) -> dict[str, tuple[float, int, str]]:
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
    qparams = qdq_tables(model)
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


def count_ops(model: onnx.ModelProto, ops: Sequence[str]) -> int:
    return sum(1 for n in model.graph.node if n.op_type in ops)
