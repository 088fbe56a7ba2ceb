"""INT8 leaves an in-graph decode and the layers feeding it in FP32, and nothing else."""

from __future__ import annotations

import io

import onnx
import torch

from adas.detector.dense_model import build_dense_model
from adas.detector.e2e import export_e2e_onnx
from adas.detector.model import build_model
from adas.packaging.ort_int8 import decode_tail


def _onnx(module: torch.nn.Module, shape: tuple[int, ...], outputs: list[str]) -> onnx.ModelProto:
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.zeros(*shape),), buf, input_names=["images"],
                      output_names=outputs, opset_version=17, dynamo=False)  # fmt: skip
    return onnx.load_from_string(buf.getvalue())


def test_a_model_whose_outputs_are_its_convs_has_no_decode_tail() -> None:
    model = _onnx(build_model(width=8).fuse(), (1, 3, 96, 384), ["heatmap", "box_size", "offset"])
    assert decode_tail(model) == set()


def test_an_in_graph_decode_and_its_feeding_convs_stay_fp32() -> None:
    model = onnx.load_from_string(export_e2e_onnx(build_model(width=8)))
    tail = decode_tail(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {ops[n] for n in tail} >= {"TopK", "MaxPool", "Sigmoid", "Concat"}
    convs = [n for n in ops if ops[n] == "Conv"]
    # Exactly the three head convs feed the decode; the backbone stays quantizable.
    assert sorted(n for n in tail if ops[n] == "Conv") == sorted(
        n for n in convs if n.split("/")[2] in ("heatmap", "box_size", "offset")
    )
    assert len(convs) > 10


def test_a_dense_heads_box_decode_stays_fp32_and_its_backbone_does_not() -> None:
    model = _onnx(build_dense_model(num_classes=3, width=8).fuse(), (1, 3, 160, 512), ["output0"])
    tail = decode_tail(model)
    ops = {n.name: n.op_type for n in model.graph.node}
    assert {ops[n] for n in tail} >= {"Softplus", "Sigmoid", "Concat"}
    tail_convs = {n for n in tail if ops[n] == "Conv"}
    assert tail_convs == {n for n in ops if ops[n] == "Conv" and n.split("/")[2] in ("cls_out", "box_out")}
