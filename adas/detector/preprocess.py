"""Source frame -> model input tensor, and the geometry to map boxes back (numpy; PIL to resize).

``normalize`` is vendored into the Triton preprocess model, whose Python environment has numpy
but neither our package nor necessarily PIL: this module imports nothing else at run time, and
PIL only if it is there (resizing needs it, normalizing does not).

A frame of ``source_hw`` is placed in the model input of ``input_hw`` by ``stretch`` (each axis
scaled to fit) or ``letterbox`` (one scale for both axes, the rest padded, centred or top-left).
``Geometry`` records the placement; ``Geometry.boxes_to_source`` is its exact inverse, the one
place where boxes go back to source-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

try:
    from PIL import Image
except ImportError:  # pragma: no cover - the Triton environment only normalizes
    Image = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from adas.intake.contract import InputSpec, Normalization


@dataclass(frozen=True)
class Geometry:
    """How one source frame sits in the model input: ``input = source * scale + pad`` per axis.

    ``scale_xy`` is the scale actually applied (resized size / source size, per axis), so a
    rounded letterbox size is inverted exactly; ``pad_xy`` the left and top padding in pixels.
    """

    source_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_xy: tuple[float, float]
    pad_xy: tuple[int, int]

    @property
    def resized_hw(self) -> tuple[int, int]:
        """The size the source is resized to before it is padded into the input."""
        return (round(self.source_hw[0] * self.scale_xy[1]), round(self.source_hw[1] * self.scale_xy[0]))

    @property
    def is_identity(self) -> bool:
        return self.source_hw == self.input_hw and self.pad_xy == (0, 0)

    def boxes_to_source(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes (N, 4) xyxy in model-input pixels -> source-frame pixels (float32), clipped to
        the source frame (a box reaching into the letterbox padding ends at the frame edge)."""
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        sx, sy = self.scale_xy
        px, py = self.pad_xy
        out = (boxes - [px, py, px, py]) / [sx, sy, sx, sy]
        h, w = self.source_hw
        return np.clip(out, 0.0, [w, h, w, h]).astype(np.float32)


def placement(
    source_hw: tuple[int, int],
    input_hw: tuple[int, int],
    resize: str = "stretch",
    letterbox_placement: str = "center",
) -> Geometry:
    """The geometry of placing a ``source_hw`` frame in a ``input_hw`` input.

    ``letterbox``: scale ``r = min(H / h, W / w)``, resized to ``round(h r) x round(w r)``;
    ``center`` puts ``(W - w') // 2`` columns left and ``(H - h') // 2`` rows on top (the odd
    pixel goes right / bottom), ``top_left`` pads only right and bottom.
    """
    (h, w), (ih, iw) = source_hw, input_hw
    if min(h, w, ih, iw) <= 0:
        raise ValueError(f"sizes must be positive: source {source_hw}, input {input_hw}")
    if resize == "stretch":
        return Geometry((h, w), (ih, iw), (iw / w, ih / h), (0, 0))
    if resize != "letterbox":
        raise ValueError(f"resize must be 'stretch' or 'letterbox', got {resize!r}")
    r = min(ih / h, iw / w)
    rh, rw = min(ih, max(1, round(h * r))), min(iw, max(1, round(w * r)))
    if letterbox_placement == "center":
        pad = ((iw - rw) // 2, (ih - rh) // 2)
    elif letterbox_placement == "top_left":
        pad = (0, 0)
    else:
        raise ValueError(f"letterbox placement must be 'center' or 'top_left', got {letterbox_placement!r}")
    return Geometry((h, w), (ih, iw), (rw / w, rh / h), pad)


def place(frames_uint8_nhwc: np.ndarray, geometry: Geometry, pad_value: int = 114) -> np.ndarray:
    """uint8 frames [N, h, w, 3] of ``geometry.source_hw`` -> [N, H, W, 3] of its input size:
    bilinear resize (PIL, as the evaluation frames are resized) and padding. Frames already at
    the input size come back unchanged."""
    frames = np.asarray(frames_uint8_nhwc)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.shape[1:3] != geometry.source_hw:
        raise ValueError(f"frames are {frames.shape[1:3]}, the geometry is for {geometry.source_hw}")
    if geometry.is_identity:
        return frames
    if Image is None:  # pragma: no cover
        raise RuntimeError("resizing frames needs Pillow")
    rh, rw = geometry.resized_hw
    (ih, iw), (px, py) = geometry.input_hw, geometry.pad_xy
    out = np.full((frames.shape[0], ih, iw, 3), pad_value, np.uint8)
    for i, frame in enumerate(frames):
        resized = Image.fromarray(np.ascontiguousarray(frame, np.uint8)).resize((rw, rh), Image.BILINEAR)
        out[i, py : py + rh, px : px + rw] = np.asarray(resized, np.uint8)
    return out


def normalize(frames_uint8_nhwc: np.ndarray, normalization: Normalization, color: str = "RGB") -> np.ndarray:
    """uint8 RGB frames [N, H, W, 3] (or one [H, W, 3]) -> float32 [N, 3, H, W]:
    ``(pixel * scale - mean[c]) / std[c]``, channels reversed first when the model wants
    ``BGR`` (``mean`` and ``std`` are then in BGR order too)."""
    frames = np.asarray(frames_uint8_nhwc)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected [N, H, W, 3] RGB frames, got shape {frames.shape}")
    if color == "BGR":
        frames = frames[..., ::-1]
    elif color != "RGB":
        raise ValueError(f"color must be 'RGB' or 'BGR', got {color!r}")
    # A uint8 pixel has 256 values: the float32 arithmetic is done once per value and channel
    # (the same operations, so the same bits) and the frames are mapped through that table.
    levels = np.arange(256, dtype=np.float32)[None, :] * np.float32(normalization.scale)
    mean = np.asarray(normalization.mean, np.float32)[:, None]
    std = np.asarray(normalization.std, np.float32)[:, None]
    table = (levels - mean) / std  # [3, 256] float32
    out = np.empty((frames.shape[0], 3, *frames.shape[1:3]), np.float32)
    for c in range(3):
        np.take(table[c], frames[..., c], out=out[:, c])
    return out


def preprocess(frames_uint8_nhwc: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Geometry]:
    """Source frames (uint8 RGB [N, h, w, 3] of one size, or one [h, w, 3]) -> the model's
    input tensor as the contract's ``input`` says, and the geometry that maps boxes back.

    With ``resize: stretch`` and frames at the input size this is ``normalize`` alone, byte for
    byte; other sizes are resized as ``adas.evaluation.runner.decode_frame`` does.
    """
    frames = np.asarray(frames_uint8_nhwc)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise ValueError(f"expected [N, H, W, 3] RGB frames, got shape {frames.shape}")
    letterbox = spec.letterbox
    geometry = placement(
        (frames.shape[1], frames.shape[2]),
        (spec.shape[2], spec.shape[3]),
        spec.resize,
        letterbox.placement if letterbox is not None else "center",
    )
    placed = place(frames, geometry, letterbox.pad_value if letterbox is not None else 0)
    return normalize(placed, spec.normalization, spec.color), geometry
