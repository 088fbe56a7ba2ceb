"""A compact CenterNet-style detector for 96x384 top-down frames.

Backbone of strided residual stages (strides 2, 4, 8, 16), an FPN-lite top-down neck
that merges everything back at stride 4, and three heads:

* ``heatmap``  [B, C, H/4, W/4]: per-class centre logits (sigmoid applied in postprocess),
* ``box_size`` [B, 2, H/4, W/4]: box width and height in input pixels (linear, not log),
* ``offset``   [B, 2, H/4, W/4]: sub-cell centre offset (x, y) in output cells, ~[0, 1).

Only Conv, BatchNorm, ReLU, Add and nearest Upsample are used, so the graph exports to
ONNX opset 17 without custom ops and quantizes with ONNX Runtime QDQ. ``fuse()`` folds
every BatchNorm into its conv for export (fewer nodes, identical numbers in eval mode).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4
INPUT_SHAPE = (3, 96, 384)
OUTPUT_NAMES = ("heatmap", "box_size", "offset")
# Centre-prior of the heatmap bias: sigmoid(-2.19) ~ 0.1, the usual CenterNet/focal-loss init
# that keeps the loss of the (overwhelmingly negative) cells small at the first step.
_HEATMAP_PRIOR_BIAS = -2.19
# Typical car width on the demo frames (~17 px at stride 4): starting the size head there
# avoids a long first phase of the size loss shrinking from a random scale.
_SIZE_INIT = 12.0


@dataclass(frozen=True)
class DetectorConfig:
    num_classes: int = 3
    width: int = 16  # channels of the stride-2 stem; later stages are multiples of it
    neck: int = 48  # channels of the FPN neck
    head: int = 64  # channels of the shared stride-4 head trunk
    blocks: tuple[int, int, int] = (1, 2, 2)  # residual blocks at strides 4, 8, 16

    def stage_channels(self) -> tuple[int, int, int, int]:
        w = self.width
        return (w, 2 * w, 4 * w, 6 * w)


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)
        self.bn: nn.Module = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x

    @torch.no_grad()
    def fuse(self) -> None:
        """Fold BN into the conv (eval statistics); the BN becomes an identity."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        bn = self.bn
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        fused = nn.Conv2d(
            self.conv.in_channels,
            self.conv.out_channels,
            self.conv.kernel_size,  # type: ignore[arg-type]
            self.conv.stride,  # type: ignore[arg-type]
            self.conv.padding,  # type: ignore[arg-type]
            bias=True,
        )
        fused.weight.copy_(self.conv.weight * scale.reshape(-1, 1, 1, 1))
        assert fused.bias is not None
        fused.bias.copy_(bn.bias - bn.running_mean * scale)
        self.conv = fused
        self.bn = nn.Identity()


class ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.a = ConvBNReLU(ch, ch)
        self.b = ConvBNReLU(ch, ch, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cout, stride=2), *[ResBlock(cout) for _ in range(blocks)])


def _out_conv(cin: int, cout: int, bias: float) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, 1)
    nn.init.normal_(conv.weight, std=0.001)
    assert conv.bias is not None
    nn.init.constant_(conv.bias, bias)
    return conv


class CenterNet(nn.Module):
    """Returns ``(heatmap, box_size, offset)``, in the order of ``OUTPUT_NAMES``.

    A tuple rather than a dict so that ``torch.export`` / ONNX / Triton see three plainly
    ordered outputs; the bundle contract names them in this order.
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        super().__init__()
        self.config = config or DetectorConfig()
        c1, c2, c3, c4 = self.config.stage_channels()
        n = self.config.neck
        b4, b8, b16 = self.config.blocks
        self.stem = ConvBNReLU(3, c1, stride=2)  # /2
        self.s4 = _stage(c1, c2, b4)  # /4
        self.s8 = _stage(c2, c3, b8)  # /8
        self.s16 = _stage(c3, c4, b16)  # /16
        self.lat16 = ConvBNReLU(c4, n, k=1)
        self.lat8 = ConvBNReLU(c3, n, k=1)
        self.lat4 = ConvBNReLU(c2, n, k=1)
        self.smooth8 = ConvBNReLU(n, n)
        # One shared 3x3 trunk for the three heads: at stride 4 (2304 cells) it is the most
        # expensive layer, and separate trunks cost ~1.5x the training time for little gain here.
        self.head = ConvBNReLU(n, self.config.head)
        h = self.config.head
        self.heatmap = _out_conv(h, self.config.num_classes, _HEATMAP_PRIOR_BIAS)
        self.box_size = _out_conv(h, 2, _SIZE_INIT)
        self.offset = _out_conv(h, 2, 0.5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f2 = self.stem(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        f16 = self.s16(f8)
        # Fixed scale_factor=2 (not size=...) keeps the ONNX Resize free of shape arithmetic.
        p8 = self.smooth8(self.lat8(f8) + F.interpolate(self.lat16(f16), scale_factor=2.0, mode="nearest"))
        p4 = self.head(self.lat4(f4) + F.interpolate(p8, scale_factor=2.0, mode="nearest"))
        return self.heatmap(p4), self.box_size(p4), self.offset(p4)

    def fuse(self) -> CenterNet:
        """Fold every BatchNorm into its conv, in place (call in eval mode, before export)."""
        fuse_batchnorms(self)
        return self


@torch.no_grad()
def fuse_batchnorms(model: nn.Module) -> None:
    """Eval mode, then every ``ConvBNReLU``'s BatchNorm folded into its conv (both families)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, ConvBNReLU):
            m.fuse()


def build_model(num_classes: int = 3, width: int = 16) -> CenterNet:
    """The detector at a given width: neck 3x and head 4x the stem width."""
    return CenterNet(DetectorConfig(num_classes=num_classes, width=width, neck=3 * width, head=4 * width))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
