"""Training pieces of the dense family: letterboxed samples, label assignment and the loss.

Assignment is YOLOX's SimOTA, kept small: a ground-truth box's candidates are the anchor points
within 2.5 strides of its centre (on every level, so a 5 px motorcycle still gets points at stride
4); each candidate costs ``BCE(class) + 3 * -log(IoU)``; a box takes its ``k`` cheapest candidates,
``k`` being the sum of its 10 best IoUs (at least 1), and a point claimed by two boxes goes to the
cheaper one. The loss is VarifocalNet's classification term (BCE against an IoU-valued target at
positives, so the score learns localisation quality, which is what NMS ranks by; negatives weighted
by ``0.75 p^2``) and GIoU on positive boxes.

Small objects needed three departures from YOLOX's plain BCE. The first trained model, without
them, scored 0.0 motorcycle AP: at every 10x4 px motorcycle its class branch gave exactly the prior
(0.0093), i.e. its features there had died under the weight of easy background candidates, while
the boxes it regressed there overlapped the motorcycles at IoU 0.6:

* the class target at a positive is ``max(IoU, QUALITY_FLOOR)``: a purely IoU-valued target is
  near zero while a tiny box's predictions still overlap it little; the floor keeps every positive
  a positive while well-placed boxes still rank above loose ones;
* a point inside a ground-truth box but not assigned to it is ignored for that box's class (no
  loss), instead of being taught background;
* negatives are weighted as in VarifocalNet (``alpha p^gamma``): easy background no longer drowns
  the few positives of small objects. With all three, motorcycles were learned by the third
  epoch (val AP 5.4, then 11.7 at the fourth, where the plain loss stayed at 0.0 throughout).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from adas.detector.data import CocoFrames
from adas.detector.dense_model import DenseDetector
from adas.detector.preprocess import Geometry, normalize, place, placement
from adas.intake.contract import Normalization

CENTER_RADIUS = 2.5  # strides around a box centre where candidates are looked for
TOP_IOUS = 10  # IoUs summed for the dynamic k
IOU_COST = 3.0
BOX_WEIGHT = 2.0
QUALITY_FLOOR = 0.5  # least class target of a positive (see the module docstring)
VFL_ALPHA, VFL_GAMMA = 0.75, 2.0  # VarifocalNet's weights of negatives

Sample = tuple[torch.Tensor, torch.Tensor]


class LetterboxDataset(Dataset[Sample]):
    """(normalized letterboxed image [3, H, W], boxes [G, 5] = x1, y1, x2, y2, class index) in
    model-input pixels; augmentation as the CenterNet's (flip, brightness/contrast), applied to
    the source frame before it is placed."""

    def __init__(
        self,
        frames: CocoFrames,
        class_ids: list[int],
        normalization: Normalization,
        input_hw: tuple[int, int],
        pad_value: int = 114,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.frames = frames
        self.channel = {c: k for k, c in enumerate(class_ids)}
        self.boxes = frames.boxes_by_image()
        self.normalization = normalization
        self.geometry: Geometry = placement(frames.frames.shape[1:3], input_hw, "letterbox", "center")
        self.pad_value = pad_value
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.frames.image_ids)

    def __getitem__(self, i: int) -> Sample:
        img = self.frames.frames[i]
        boxes = [
            b for b in self.boxes[self.frames.image_ids[i]] if b[4] in self.channel and b[2] > 0 and b[3] > 0
        ]
        if self.augment:
            if self.rng.random() < 0.5:
                img = img[:, ::-1]
                width = img.shape[1]
                boxes = [(width - x - bw, y, bw, bh, c) for x, y, bw, bh, c in boxes]
            contrast = self.rng.uniform(0.75, 1.25)
            brightness = self.rng.uniform(-20.0, 20.0)
            f = img.astype(np.float32)
            m = f.mean()
            img = np.clip((f - m) * contrast + m + brightness, 0.0, 255.0).astype(np.uint8)
        x = normalize(
            place(np.ascontiguousarray(img)[None], self.geometry, self.pad_value), self.normalization
        )[0]
        sx, sy = self.geometry.scale_xy
        px, py = self.geometry.pad_xy
        target = np.array(
            [[x0 * sx + px, y0 * sy + py, (x0 + bw) * sx + px, (y0 + bh) * sy + py, self.channel[c]]
             for x0, y0, bw, bh, c in boxes],
            np.float32,
        ).reshape(-1, 5)  # fmt: skip
        return torch.from_numpy(x), torch.from_numpy(target)


def collate(batch: list[Sample]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    return torch.stack([x for x, _ in batch]), [t for _, t in batch]


def pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy boxes a [G, 4] x b [M, 4] -> [G, M]."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / (area_a[:, None] + area_b[None, :] - inter).clamp(min=1e-6)


def giou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of matched xyxy boxes [P, 4] (elementwise)."""
    lt = torch.maximum(pred[:, :2], target[:, :2])
    rb = torch.minimum(pred[:, 2:], target[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_p = (pred[:, 2:] - pred[:, :2]).clamp(min=0).prod(-1)
    area_t = (target[:, 2:] - target[:, :2]).clamp(min=0).prod(-1)
    union = (area_p + area_t - inter).clamp(min=1e-6)
    hull = (torch.maximum(pred[:, 2:], target[:, 2:]) - torch.minimum(pred[:, :2], target[:, :2])).prod(-1)
    return 1.0 - (inter / union - (hull - union) / hull.clamp(min=1e-6))


@torch.no_grad()
def assign(
    logits: torch.Tensor, boxes: torch.Tensor, gt: torch.Tensor, points: torch.Tensor, strides: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """SimOTA for one image: (candidate indices [P], their ground-truth rows [P]).

    ``logits`` [N, C], ``boxes`` [N, 4] xyxy (predictions), ``gt`` [G, 5] (xyxy, class index).
    """
    empty = torch.zeros(0, dtype=torch.long)
    if gt.shape[0] == 0:
        return empty, empty
    centre = (gt[:, :2] + gt[:, 2:4]) * 0.5  # [G, 2]
    radius = CENTER_RADIUS * strides  # [N]
    near = ((points[None] - centre[:, None]).abs() < radius[None, :, None]).all(-1)  # [G, N]
    cand = near.any(0).nonzero().squeeze(1)
    if cand.numel() == 0:
        return empty, empty
    near = near[:, cand]
    iou = pairwise_iou(gt[:, :4], boxes[cand])  # [G, M]
    cls = gt[:, 4].long()
    cls_cost = -F.logsigmoid(logits[cand][:, cls].t())  # [G, M]
    cost = cls_cost + IOU_COST * -torch.log(iou + 1e-8) + 1e5 * (~near)
    k = iou.masked_fill(~near, 0).topk(min(TOP_IOUS, cand.numel()), dim=1).values.sum(1).int().clamp(min=1)
    matching = torch.zeros_like(near)
    order = cost.argsort(dim=1)
    for g in range(gt.shape[0]):
        chosen = order[g, : int(k[g])]
        matching[g, chosen] = near[g, chosen]
    claimed = matching.sum(0)
    if bool((claimed > 1).any()):
        contested = claimed > 1
        best = cost[:, contested].argmin(0)
        matching[:, contested] = False
        matching[best, contested.nonzero().squeeze(1)] = True
    g_idx, m_idx = matching.nonzero(as_tuple=True)
    return cand[m_idx], g_idx


def dense_loss(
    model: DenseDetector, logits: torch.Tensor, boxes: torch.Tensor, targets: list[torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Loss of a batch: ``logits`` [B, N, C], ``boxes`` [B, N, 4] xyxy from ``forward_train``."""
    points, strides = model.points, model.strides
    cls_target = torch.zeros_like(logits)
    cls_weight = torch.ones_like(logits)
    box_terms, num_pos = [], 0
    for b, gt in enumerate(targets):
        if gt.shape[0]:
            # A point inside a box that was not assigned to it is neither taught its class nor
            # taught background: around a 10x4 px motorcycle the unassigned points see the same
            # pixels as its one positive, and calling them background (YOLOX's choice) drove
            # every motorcycle score to ~0 (the first trained model: 0.0 motorcycle AP).
            inside = ((points[None] > gt[:, None, :2]) & (points[None] < gt[:, None, 2:4])).all(-1)  # [G, N]
            g_in, n_in = inside.nonzero(as_tuple=True)
            cls_weight[b, n_in, gt[g_in, 4].long()] = 0.0
        idx, g = assign(logits[b].detach(), boxes[b].detach(), gt, points, strides)
        if idx.numel() == 0:
            continue
        cls_weight[b, idx] = 1.0
        matched = gt[g, :4]
        with torch.no_grad():
            quality = pairwise_iou(boxes[b, idx].detach(), matched).diagonal().clamp(min=QUALITY_FLOOR)
        cls_target[b, idx, gt[g, 4].long()] = quality
        box_terms.append(giou_loss(boxes[b, idx], matched))
        num_pos += idx.numel()
    norm = float(max(num_pos, 1))
    # Varifocal weighting: a positive counts by its target, a negative by alpha p^gamma, so the
    # thousands of easy background candidates stop outweighing a small object's few positives.
    easy = VFL_ALPHA * torch.sigmoid(logits.detach()).pow(VFL_GAMMA)
    weight = torch.where(cls_target > 0, cls_target, easy) * cls_weight
    cls = F.binary_cross_entropy_with_logits(logits, cls_target, weight, reduction="sum") / norm
    box = torch.cat(box_terms).sum() / norm if box_terms else boxes.sum() * 0.0
    return {"loss": cls + BOX_WEIGHT * box, "cls": cls, "box": box, "positives": torch.tensor(float(num_pos))}
