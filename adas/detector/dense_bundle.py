"""The dense family as a bundle: its v2 contract and its ONNX export (``model.onnx``).

The dense detector ships as ONNX, as teams export YOLO-style models from their trainers: opset 17,
a dynamic batch, BatchNorm folded, one output ``output0`` ``[B, 4 + C, N]`` (``BFN``), the
letterbox described in the contract so that every consumer maps boxes back to source pixels.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Sequence
from pathlib import Path

import onnx
import torch
import yaml
from onnx import numpy_helper
from torch import nn

from adas.detector.dense_model import INPUT_SHAPE, OUTPUT_NAME, DenseDetector, build_dense_model
from adas.intake.contract import (
    CONTRACT_FILE,
    LINEAGE_FILE,
    ClassEntry,
    Contract,
    DensePostprocess,
    InputSpec,
    Letterbox,
    Lineage,
    Normalization,
    OutputSpec,
)

ONNX_FILE = "model.onnx"
INPUT_NAME = "images"
OPSET = 17
PAD_VALUE = 114


def build_dense_contract(
    *,
    version: str,
    model_name: str,
    task: str,
    normalization: Normalization,
    classes: Sequence[tuple[int, str]],
    num_candidates: int,
    score_threshold: float = 0.3,
    nms_iou_threshold: float = 0.6,
    max_detections: int = 100,
    pre_nms_top_k: int | None = 1000,
) -> Contract:
    c, h, w = INPUT_SHAPE
    return Contract(
        task=task,
        model_name=model_name,
        version=version,
        model_file=ONNX_FILE,
        model_format="onnx",
        input=InputSpec(
            name=INPUT_NAME,
            shape=[-1, c, h, w],
            dtype="float32",
            normalization=normalization,
            resize="letterbox",
            letterbox=Letterbox(placement="center", pad_value=PAD_VALUE),
        ),
        outputs=[
            OutputSpec(
                name=OUTPUT_NAME,
                shape=[-1, 4 + len(classes), num_candidates],
                dtype="float32",
                description="candidates before NMS: cx, cy, w, h in input pixels, then one probability per class",
            )
        ],
        classes=[ClassEntry(id=i, name=n) for i, n in classes],
        postprocess=DensePostprocess(
            kind="dense",
            output=OUTPUT_NAME,
            layout="BFN",
            box_encoding="cxcywh",
            coordinates="input_pixels",
            objectness=False,
            scores="probabilities",
            score_threshold=score_threshold,
            nms="class_aware",
            nms_iou_threshold=nms_iou_threshold,
            pre_nms_top_k=pre_nms_top_k,
            max_detections=max_detections,
        ),
    )


def export_dense_onnx(model: DenseDetector) -> bytes:
    """ONNX bytes of a BN-fused copy of ``model``, opset 17, dynamic batch (TorchScript exporter:
    the same one packaging uses, so the bundle's graph is what the platform would have built)."""
    fused = copy.deepcopy(model).cpu().eval().fuse()
    buf = io.BytesIO()
    torch.onnx.export(
        fused,
        (torch.zeros(1, *INPUT_SHAPE),),
        buf,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return buf.getvalue()


def write_dense_bundle(
    model: DenseDetector,
    out_dir: str | Path,
    *,
    version: str,
    model_name: str,
    task: str,
    lineage: Lineage,
    normalization: Normalization,
    classes: Sequence[tuple[int, str]],
    score_threshold: float = 0.3,
) -> Path:
    """Write ``model.onnx``, ``contract.yaml`` and ``lineage.json``; the contract is validated first."""
    contract = build_dense_contract(
        version=version,
        model_name=model_name,
        task=task,
        normalization=normalization,
        classes=classes,
        num_candidates=model.config.num_candidates,
        score_threshold=score_threshold,
    )
    if model.config.num_classes != len(contract.classes):
        raise ValueError(f"model has {model.config.num_classes} classes, contract {len(contract.classes)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / contract.model_file).write_bytes(export_dense_onnx(model))
    (out / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    (out / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")
    return out


def read_dense_weights(path: Path, num_classes: int) -> DenseDetector:
    """A dense bundle's (BN-fused) weights back in a ``DenseDetector``, read from its ONNX file (our
    own shipped bundles only: the eager baseline of benchmarks, the conformance exports). The
    exporter emits one Conv per conv module in execution order, so the graph's Conv nodes map onto
    the fused model's convs as a forward pass visits them; callers check the result against ONNX
    Runtime."""
    graph = onnx.load(str(path)).graph
    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    # The exporter shares equal initializers through Identity nodes: follow them.
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in tensors:
            tensors[node.output[0]] = tensors[node.input[0]]
    convs = [n for n in graph.node if n.op_type == "Conv"]
    width = int(tensors[convs[0].input[1]].shape[0])
    model = build_dense_model(num_classes=num_classes, width=width).fuse()
    order: list[nn.Conv2d] = []
    hooks = [
        m.register_forward_hook(lambda mod, i, o: order.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, *model.config.input_hw))
    for h in hooks:
        h.remove()
    if len(order) != len(convs):
        raise ValueError(f"{path}: {len(convs)} Conv nodes, the model has {len(order)} convs")
    with torch.no_grad():
        for module, node in zip(order, convs, strict=True):
            module.weight.copy_(torch.from_numpy(tensors[node.input[1]].copy()))
            assert module.bias is not None
            module.bias.copy_(torch.from_numpy(tensors[node.input[2]].copy()))
    return model.eval()
