"""An anchor-free dense detector in the YOLO style, for 160x512 letterboxed frames.

The second model family the platform ships (the first is the CenterNet in ``model.py``), so that
every stage is proven on a detector whose output is *candidates before NMS*, as YOLOv8/11 and
decoded YOLOX export it:

* backbone: a strided conv stem and three CSP stages (``C2f`` blocks: split, a chain of residual
  bottlenecks, concatenate every partial output, fuse with a 1x1), strides 4, 8 and 16;
* neck: a PAN (top-down to stride 4, bottom-up back to stride 8);
* head: decoupled per level (a classification branch and a box branch), at strides 4 and 8:
  the demo's objects are 5-40 px tall, so stride 16 would only add empty candidates;
* output ``output0`` ``[B, 4 + C, N]`` (``BFN``, YOLOv8's layout): ``cx, cy, w, h`` in input
  pixels, then one sigmoid probability per class, N = 40x128 + 20x64 = 6400 candidates.

The box branch predicts distances to the four sides in stride units through a softplus, decoded
in the graph against fixed anchor points (buffers: the input size is fixed). ReLU everywhere else
keeps the graph small for ONNX Runtime's INT8 (SiLU would add a Sigmoid and a Mul per conv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from adas.detector.model import ConvBNReLU, fuse_batchnorms

INPUT_SHAPE = (3, 160, 512)
STRIDES = (4, 8)
OUTPUT_NAME = "output0"
# Class-logit prior: sigmoid(-4.6) ~ 0.01, RetinaNet's init, so thousands of background
# candidates do not swamp the first steps.
_CLASS_PRIOR_BIAS = -4.6
# Side distances start near 1.5 strides (softplus(1.2) ~ 1.46): about the demo's car size at
# stride 4, rather than a random scale.
_DISTANCE_INIT = 1.2


@dataclass(frozen=True)
class DenseConfig:
    num_classes: int = 3
    width: int = 16  # channels of the stem; stages are 2x, 4x, 6x of it
    head: int = 32  # channels of each head branch
    blocks: tuple[int, int, int] = (1, 2, 1)  # bottlenecks in the C2f of strides 4, 8, 16
    input_hw: tuple[int, int] = (INPUT_SHAPE[1], INPUT_SHAPE[2])

    @property
    def num_candidates(self) -> int:
        h, w = self.input_hw
        return sum((h // s) * (w // s) for s in STRIDES)


class Bottleneck(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = ConvBNReLU(ch, ch)
        self.b = ConvBNReLU(ch, ch, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


class C2f(nn.Module):
    """CSP block: half the channels pass through, the other half through ``n`` bottlenecks; every
    intermediate output is concatenated and fused by a 1x1 (YOLOv8's C2f, ReLU instead of SiLU)."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.hidden = cout // 2
        self.split = ConvBNReLU(cin, 2 * self.hidden, k=1)
        self.blocks = nn.ModuleList(Bottleneck(self.hidden) for _ in range(n))
        self.fuse_conv = ConvBNReLU((2 + n) * self.hidden, cout, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split(x).chunk(2, dim=1)
        parts = [a, b]
        for block in self.blocks:
            parts.append(block(parts[-1]))
        return self.fuse_conv(torch.cat(parts, dim=1))


class Head(nn.Module):
    """Decoupled head of one level: class logits [B, C, h, w] and side distances [B, 4, h, w]."""

    def __init__(self, cin: int, ch: int, num_classes: int) -> None:
        super().__init__()
        self.cls = nn.Sequential(ConvBNReLU(cin, ch), ConvBNReLU(ch, ch))
        self.box = nn.Sequential(ConvBNReLU(cin, ch), ConvBNReLU(ch, ch))
        self.cls_out = nn.Conv2d(ch, num_classes, 1)
        self.box_out = nn.Conv2d(ch, 4, 1)
        nn.init.normal_(self.cls_out.weight, std=0.01)
        nn.init.constant_(self.cls_out.bias, _CLASS_PRIOR_BIAS)  # type: ignore[arg-type]
        nn.init.normal_(self.box_out.weight, std=0.01)
        nn.init.constant_(self.box_out.bias, _DISTANCE_INIT)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cls_out(self.cls(x)), self.box_out(self.box(x))


def anchor_points(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> torch.Tensor:
    """Cell centres of every level in input pixels, [N, 2] (x, y), level by level, row-major."""
    points = []
    for s in strides:
        h, w = input_hw[0] // s, input_hw[1] // s
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        points.append(torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5).mul(s))
    return torch.cat(points)


def candidate_strides(input_hw: tuple[int, int], strides: tuple[int, ...] = STRIDES) -> torch.Tensor:
    """The stride of each candidate, [N]."""
    return torch.cat([torch.full(((input_hw[0] // s) * (input_hw[1] // s),), float(s)) for s in strides])


class DenseDetector(nn.Module):
    """``forward(x) -> output0`` [B, 4 + C, N]; ``forward_train(x) -> (class logits [B, N, C],
    boxes xyxy [B, N, 4])`` for the loss (logits, not probabilities: BCE on logits is stable)."""

    def __init__(self, config: DenseConfig | None = None) -> None:
        super().__init__()
        self.config = config or DenseConfig()
        w = self.config.width
        c2, c4, c8, c16 = w, 2 * w, 4 * w, 6 * w
        b4, b8, b16 = self.config.blocks
        self.stem = ConvBNReLU(3, c2, stride=2)  # /2
        self.down4 = ConvBNReLU(c2, c4, stride=2)
        self.c4 = C2f(c4, c4, b4)
        self.down8 = ConvBNReLU(c4, c8, stride=2)
        self.c8 = C2f(c8, c8, b8)
        self.down16 = ConvBNReLU(c8, c16, stride=2)
        self.c16 = C2f(c16, c16, b16)
        # PAN: top-down 16 -> 8 -> 4, then bottom-up 4 -> 8.
        self.td8 = C2f(c16 + c8, c8, 1)
        self.td4 = C2f(c8 + c4, c4, 1)
        self.bu_down = ConvBNReLU(c4, c4, stride=2)
        self.bu8 = C2f(c4 + c8, c8, 1)
        self.head4 = Head(c4, self.config.head, self.config.num_classes)
        self.head8 = Head(c8, self.config.head, self.config.num_classes)
        self.register_buffer("points", anchor_points(self.config.input_hw), persistent=False)
        self.register_buffer("strides", candidate_strides(self.config.input_hw), persistent=False)

    def _levels(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        f4 = self.c4(self.down4(self.stem(x)))
        f8 = self.c8(self.down8(f4))
        f16 = self.c16(self.down16(f8))
        # Fixed scale_factor=2 (not size=...) keeps the ONNX Resize free of shape arithmetic.
        p8 = self.td8(torch.cat([F.interpolate(f16, scale_factor=2.0, mode="nearest"), f8], 1))
        p4 = self.td4(torch.cat([F.interpolate(p8, scale_factor=2.0, mode="nearest"), f4], 1))
        n8 = self.bu8(torch.cat([self.bu_down(p4), p8], 1))
        return [self.head4(p4), self.head8(n8)]

    def _flatten(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits [B, C, N] and side distances in pixels [B, 4, N] (l, t, r, b)."""
        levels = self._levels(x)
        logits = torch.cat([c.flatten(2) for c, _ in levels], 2)
        distances = torch.cat([F.softplus(d).flatten(2) for _, d in levels], 2) * self.strides
        return logits, distances

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits, ltrb = self._flatten(x)
        points = self.points.t()  # [2, N]
        centre = points + (ltrb[:, 2:4] - ltrb[:, 0:2]) * 0.5
        size = ltrb[:, 0:2] + ltrb[:, 2:4]
        return torch.cat([centre, size, torch.sigmoid(logits)], 1)

    def forward_train(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, ltrb = self._flatten(x)
        points = self.points.t()
        boxes = torch.cat([points - ltrb[:, 0:2], points + ltrb[:, 2:4]], 1)  # xyxy
        return logits.transpose(1, 2), boxes.transpose(1, 2)

    def fuse(self) -> DenseDetector:
        """Fold every BatchNorm into its conv, in place (call before export)."""
        fuse_batchnorms(self)
        return self


def build_dense_model(num_classes: int = 3, width: int = 16) -> DenseDetector:
    return DenseDetector(DenseConfig(num_classes=num_classes, width=width, head=2 * width))
