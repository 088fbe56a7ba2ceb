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

import torch
import yaml

from adas.detector.dense_model import INPUT_SHAPE, OUTPUT_NAME, DenseDetector
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
