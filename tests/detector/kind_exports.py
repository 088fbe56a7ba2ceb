"""One dense model, every output kind: ONNX exports of the same weights in each kind's layout.

The conformance test takes the dense family's weights and exports them as teams' trainers would:

* ``dense_bfn``: as trained (YOLOv8's ``[B, 4 + C, N]``);
* ``dense_bnf``: transposed (YOLOv5's ``[B, N, F]``);
* ``dense_objectness``: ``[B, N, 4 + 1 + C]`` with an objectness column, all as logits (YOLOv5/X
  style: score = sigmoid(obj) x sigmoid(cls), equal to the model's class probability);
* ``queries``: a set of ``Q`` rows, class probabilities ``[B, Q, C]`` + normalized cxcywh boxes
  ``[B, Q, 4]`` (Deformable-DETR style, ``activation: none``);
* ``detections``: ``K`` packed rows ``[B, K, 6]`` in input pixels, zero-score padding (YOLOv10 style);
* ``ragged``: the detections flattened over the batch with a ``batch_index`` column (yolov7 ORT style);
* ``detections_source``: ``detections`` in source-frame pixels, the graph taking each frame's size
  as a second input ``orig_target_sizes`` ``[B, 2]`` (w, h; RT-DETR's export) and undoing the
  letterbox itself.

The last three decode in the graph with *Fast NMS* (YOLACT): among the top candidates of one class, a
box is dropped when a higher-scored one overlaps it above the IoU threshold. Unlike greedy NMS (what
the ``dense`` decoder does) an already dropped box still drops others, so these kinds keep slightly
fewer boxes: that, and the top-K cut, are the differences the conformance test allows.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import torch
from torch import nn

from adas.detector.dense_model import DenseDetector
from adas.intake.contract import Contract

TOP_K = 300
ROWS = 100


def _fast_nms(out: torch.Tensor, iou_threshold: float, top_k: int) -> tuple[torch.Tensor, ...]:
    """From ``[B, 4 + C, N]`` (cxcywh px, probabilities): the ``top_k`` best candidates by their best
    class, as (boxes xyxy [B, K, 4], score [B, K] with suppressed = 0, label [B, K] float)."""
    probs = out[:, 4:]
    score, label = probs.max(1)  # [B, N]
    top, index = score.topk(top_k, dim=1)
    cxcywh = out[:, :4].gather(2, index.unsqueeze(1).expand(-1, 4, -1)).transpose(1, 2)  # [B, K, 4]
    half = cxcywh[..., 2:] * 0.5
    boxes = torch.cat([cxcywh[..., :2] - half, cxcywh[..., :2] + half], -1)
    cls = label.gather(1, index)
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).clamp(min=0).prod(-1)
    iou = inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-6)  # [B, K, K]
    same = (cls[:, :, None] == cls[:, None, :]).to(iou.dtype)
    # Row i suppresses column j when i scores higher (earlier in the top-K order): strict upper triangle.
    earlier = torch.triu(torch.ones(top_k, top_k, dtype=iou.dtype), diagonal=1)
    worst = (iou * same * earlier).amax(1)  # [B, K]: the largest overlap with a better box of its class
    kept = top * (worst <= iou_threshold).to(top.dtype)
    return boxes, kept, cls.to(out.dtype)


class Transposed(nn.Module):
    def __init__(self, model: DenseDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).transpose(1, 2)


class WithObjectness(nn.Module):
    """``[B, N, 4 + 1 + C]`` logits: objectness = the best class probability, class = p / obj."""

    def __init__(self, model: DenseDetector) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        probs = out[:, 4:].clamp(1e-7, 1 - 1e-7)
        obj = probs.amax(1, keepdim=True)
        cls = (probs / obj).clamp(1e-7, 1 - 1e-7)
        logit = lambda p: torch.log(p) - torch.log1p(-p)  # noqa: E731
        return torch.cat([out[:, :4], logit(obj), logit(cls)], 1).transpose(1, 2)


class Queries(nn.Module):
    """``(scores [B, Q, C], boxes [B, Q, 4])``: probabilities of the kept rows (others 0), boxes
    normalized cxcywh."""

    def __init__(self, model: DenseDetector, iou_threshold: float) -> None:
        super().__init__()
        self.model, self.iou_threshold = model, iou_threshold

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        boxes, kept, label = _fast_nms(self.model(x), self.iou_threshold, TOP_K)
        num_classes = self.model.config.num_classes
        onehot = (label.unsqueeze(-1) == torch.arange(num_classes, dtype=label.dtype)).to(kept.dtype)
        h, w = float(x.shape[2]), float(x.shape[3])
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype)
        cxcywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) * 0.5, boxes[..., 2:] - boxes[..., :2]], -1)
        return kept.unsqueeze(-1) * onehot, cxcywh / scale


class Rows(nn.Module):
    """``[B, ROWS, 6]`` packed ``x1, y1, x2, y2, score, label`` (zero-score padding), the best
    ``ROWS`` kept rows; ``flatten`` gives ``[B * ROWS, 7]`` with a leading batch index instead."""

    def __init__(self, model: DenseDetector, iou_threshold: float, flatten: bool = False) -> None:
        super().__init__()
        self.model, self.iou_threshold, self.flatten = model, iou_threshold, flatten

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        boxes, kept, label = _fast_nms(self.model(x), self.iou_threshold, TOP_K)
        score, order = kept.topk(ROWS, dim=1)
        rows = torch.cat(
            [
                boxes.gather(1, order.unsqueeze(-1).expand(-1, -1, 4)),
                score.unsqueeze(-1),
                label.gather(1, order).unsqueeze(-1),
            ],
            -1,
        )
        if not self.flatten:
            return rows
        batch = torch.arange(rows.shape[0], dtype=rows.dtype).view(-1, 1, 1).expand(-1, ROWS, 1)
        return torch.cat([batch, rows], -1).reshape(-1, 7)


class SourceRows(nn.Module):
    """:class:`Rows` with boxes in source-frame pixels: ``forward(images, orig_target_sizes)``, the
    sizes ``[B, 2]`` (w, h), the letterbox (centred, as the contract places frames) undone in the graph."""

    def __init__(self, model: DenseDetector, iou_threshold: float) -> None:
        super().__init__()
        self.rows = Rows(model, iou_threshold)

    def forward(self, x: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        rows = self.rows(x)
        h_in, w_in = float(x.shape[2]), float(x.shape[3])
        w, h = sizes[:, 0].to(rows.dtype), sizes[:, 1].to(rows.dtype)
        r = torch.minimum(h_in / h, w_in / w)
        rw, rh = torch.round(w * r), torch.round(h * r)  # the placed size, as adas.detector.preprocess
        pad = torch.stack([torch.floor((w_in - rw) / 2), torch.floor((h_in - rh) / 2)], -1)  # [B, 2]
        scale = torch.stack([rw / w, rh / h], -1)
        xy1 = (rows[..., 0:2] - pad[:, None]) / scale[:, None]
        xy2 = (rows[..., 2:4] - pad[:, None]) / scale[:, None]
        return torch.cat([xy1, xy2, rows[..., 4:]], -1)


SOURCE_SIZE_INPUT = "orig_target_sizes"


def export(
    module: nn.Module, output_names: list[str], input_hw: tuple[int, int], source_size: bool = False
) -> bytes:
    """The module as ONNX (opset 17, dynamic batch); ``source_size``: it also takes
    ``orig_target_sizes`` [B, 2] int64."""
    buf = io.BytesIO()
    inputs = ["images", SOURCE_SIZE_INPUT] if source_size else ["images"]
    example = (torch.zeros(2, 3, *input_hw),)
    if source_size:
        example += (torch.tensor([[input_hw[1], input_hw[0]]] * 2, dtype=torch.int64),)
    torch.onnx.export(
        module.eval(),
        example,
        buf,
        input_names=inputs,
        output_names=output_names,
        dynamic_axes={**{n: {0: "batch"} for n in inputs}, **{n: {0: "batch"} for n in output_names}},
        opset_version=17,
        dynamo=False,
    )
    return buf.getvalue()


KindExport = Callable[[DenseDetector, float], tuple[nn.Module, list[str]]]
EXPORTS: dict[str, KindExport] = {
    "dense_bfn": lambda m, iou: (m, ["output0"]),
    "dense_bnf": lambda m, iou: (Transposed(m), ["output0"]),
    "dense_objectness": lambda m, iou: (WithObjectness(m), ["output0"]),
    "queries": lambda m, iou: (Queries(m, iou), ["scores", "boxes"]),
    "detections": lambda m, iou: (Rows(m, iou), ["output0"]),
    "ragged": lambda m, iou: (Rows(m, iou, flatten=True), ["rows"]),
    "detections_source": lambda m, iou: (SourceRows(m, iou), ["output0"]),
}


def kind_contract(base: Contract, kind: str) -> Contract:
    """``base`` (the dense bundle's contract) rewritten for the export of ``kind``: same input,
    classes and operating threshold; that kind's outputs and postprocess."""

    n_cls = len(base.classes)
    n = base.outputs[0].shape[2]
    post = base.postprocess
    common = {"score_threshold": post.score_threshold, "max_detections": post.max_detections}
    nms = {"nms_iou_threshold": post.nms_iou_threshold, "pre_nms_top_k": post.pre_nms_top_k}
    outputs: list[dict] = []
    if kind == "dense_bfn":
        return base
    if kind == "dense_bnf":
        outputs = [{"name": "output0", "shape": [-1, n, 4 + n_cls]}]
        postprocess = {"kind": "dense", "output": "output0", "layout": "BNF", **nms, **common}
    elif kind == "dense_objectness":
        outputs = [{"name": "output0", "shape": [-1, n, 5 + n_cls]}]
        postprocess = {"kind": "dense", "output": "output0", "layout": "BNF", "objectness": True,
                       "scores": "logits", **nms, **common}  # fmt: skip
    elif kind == "queries":
        outputs = [
            {"name": "scores", "shape": [-1, TOP_K, n_cls]},
            {"name": "boxes", "shape": [-1, TOP_K, 4]},
        ]
        postprocess = {"kind": "queries", "scores_output": "scores", "boxes_output": "boxes",
                       "activation": "none", **common}  # fmt: skip
    elif kind == "detections":
        outputs = [{"name": "output0", "shape": [-1, ROWS, 6]}]
        postprocess = {"kind": "detections", "packed_output": "output0", "padding": "zero_score", **common}
    elif kind == "detections_source":
        outputs = [{"name": "output0", "shape": [-1, ROWS, 6]}]
        postprocess = {"kind": "detections", "packed_output": "output0", "padding": "zero_score",
                       "coordinates": "source_pixels", **common}  # fmt: skip
    elif kind == "ragged":
        outputs = [{"name": "rows", "shape": [-1, 7]}]
        postprocess = {"kind": "ragged", "packed_output": "rows",
                       "columns": ["batch_index", "x1", "y1", "x2", "y2", "score", "label"], **common}  # fmt: skip
    else:
        raise ValueError(f"unknown kind export {kind!r}")
    data = base.model_dump(mode="json")
    data["outputs"] = [{**o, "dtype": "float32", "description": ""} for o in outputs]
    data["postprocess"] = postprocess
    if kind == "detections_source":
        data["input"]["source_size"] = {"name": SOURCE_SIZE_INPUT, "order": "wh", "dtype": "int64"}
    data["model_name"] = f"{base.model_name}-{kind.replace('_', '-')}"
    return Contract.model_validate(data)
