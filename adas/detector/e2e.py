"""CenterNet with its decode inside the graph: kind ``detections``, as NMS-in-graph exports ship.

``CenterNetE2E`` wraps a trained CenterNet: sigmoid, 3x3 max-pool peak test, top-K over every
class x cell, boxes from the size and offset heads at the peak, clipped to the input. Its one
output ``detections`` is ``[B, K, 6]`` packed ``x1, y1, x2, y2, score, label`` in input pixels
(label = class index, float as in packed exports). There is no NMS: the peak test is CenterNet's
own suppression, so rows the heatmap decoder would drop by class-wise NMS at IoU 0.5 stay; the
two decodes agree on every peak otherwise (tested), and AP differs by that NMS alone.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from adas.detector.model import INPUT_SHAPE, STRIDE
from adas.intake.contract import (
    CONTRACT_FILE,
    LINEAGE_FILE,
    Contract,
    DetectionsPostprocess,
    Lineage,
    OutputSpec,
)

OUTPUT_NAME = "detections"
ONNX_FILE = "model.onnx"
OPSET = 17


class CenterNetE2E(nn.Module):
    def __init__(self, centernet: nn.Module, top_k: int = 100, stride: int = STRIDE) -> None:
        super().__init__()
        self.centernet = centernet
        self.top_k = top_k
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        heat_logits, size, offset = self.centernet(x)
        heat = torch.sigmoid(heat_logits)
        _, _, h, w = heat.shape
        peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1)).to(heat.dtype)
        scores, index = peaks.flatten(1).topk(self.top_k, dim=1)  # over class x cell
        cell = index % (h * w)
        label = torch.div(index, h * w, rounding_mode="floor")
        ys = torch.div(cell, w, rounding_mode="floor").to(heat.dtype)
        xs = (cell % w).to(heat.dtype)
        gather = cell.unsqueeze(1).expand(-1, 2, -1)
        size_at = size.flatten(2).gather(2, gather).clamp(min=0.0)  # [B, 2, K]
        offset_at = offset.flatten(2).gather(2, gather)
        cx = (xs + offset_at[:, 0]) * self.stride
        cy = (ys + offset_at[:, 1]) * self.stride
        half_w, half_h = size_at[:, 0] * 0.5, size_at[:, 1] * 0.5
        limit_x, limit_y = float(w * self.stride), float(h * self.stride)
        boxes = torch.stack(
            [
                (cx - half_w).clamp(0.0, limit_x),
                (cy - half_h).clamp(0.0, limit_y),
                (cx + half_w).clamp(0.0, limit_x),
                (cy + half_h).clamp(0.0, limit_y),
            ],
            -1,
        )
        return torch.cat([boxes, scores.unsqueeze(-1), label.to(heat.dtype).unsqueeze(-1)], -1)


def e2e_contract(base: Contract, top_k: int = 100) -> Contract:
    """The CenterNet bundle's contract with the decode moved into the graph (same input, classes,
    operating threshold; ``model.onnx``, kind ``detections``)."""
    post = base.postprocess
    data = base.model_dump(mode="json")
    data.update(
        model_name=f"{base.model_name}-e2e",
        model_file=ONNX_FILE,
        model_format="onnx",
        outputs=[
            OutputSpec(
                name=OUTPUT_NAME,
                shape=[-1, top_k, 6],
                dtype="float32",
                description="x1, y1, x2, y2 (input pixels), score, label (class index): CenterNet peaks, top-K",
            ).model_dump(mode="json")
        ],
        postprocess=DetectionsPostprocess(
            kind="detections",
            packed_output=OUTPUT_NAME,
            columns=("x1", "y1", "x2", "y2", "score", "label"),
            coordinates="input_pixels",
            padding="zero_score",
            score_threshold=post.score_threshold,
            max_detections=min(post.max_detections, top_k),
        ).model_dump(mode="json"),
    )
    return Contract.model_validate(data)  # validated whole: outputs against the postprocess


def export_e2e_onnx(centernet: nn.Module, top_k: int = 100) -> bytes:
    """ONNX bytes of the BN-fused CenterNet with its decode, opset 17, dynamic batch."""
    inner = copy.deepcopy(centernet).cpu().eval()
    if hasattr(inner, "fuse"):
        inner.fuse()
    buf = io.BytesIO()
    torch.onnx.export(
        CenterNetE2E(inner, top_k).eval(),
        (torch.zeros(2, *INPUT_SHAPE),),
        buf,
        input_names=["images"],
        output_names=[OUTPUT_NAME],
        dynamic_axes={"images": {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        opset_version=OPSET,
        dynamo=False,
    )
    return buf.getvalue()


def write_e2e_bundle(
    centernet: nn.Module, base: Contract, lineage: Lineage, out_dir: Path, top_k: int = 100
) -> Path:
    contract = e2e_contract(base, top_k)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / ONNX_FILE).write_bytes(export_e2e_onnx(centernet, top_k))
    (out / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    (out / LINEAGE_FILE).write_text(lineage.model_dump_json(indent=2) + "\n")
    return out
