"""Short GIF clips of failing runs: the perceived frame with what the model reported.

Each clip is the last few seconds before the failure (``clips.seconds``), upscaled (nearest),
showing the weathered frame the engine saw, its detections (class colour: car green, truck red,
motorcycle yellow), the ground truth it missed (magenta: an object with no detection over it),
the ego (blue) and a caption with time and speed.

The frame is quantized to a small adaptive palette and the overlay colours are reserved palette
entries drawn afterwards, so thin outlines keep their exact colours in the GIF (an adaptive
palette over the finished RGB frame would merge them into the fog). GIFs are deterministic bytes
for the same frames.

Domain code: no dagster import.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from adas.detector.postprocess import box_iou
from adas.simulation.episode import ClipFrame

CAPTION_H = 12
# Reserved overlay colours (appended to each frame's adaptive palette, in this order).
OVERLAY: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "car": (0, 255, 0),
    "truck": (255, 40, 40),
    "motorcycle": (255, 230, 0),
    "ego": (60, 140, 255),
    "missed": (255, 0, 255),
}
CLASS_KEYS: dict[int, str] = {1: "car", 2: "truck", 3: "motorcycle"}


def _missed(frame: ClipFrame) -> list[tuple[float, float, float, float]]:
    gt = [g for g in frame.gt if not g.is_ego]
    if not gt:
        return []
    ious = box_iou(np.asarray([g.xyxy for g in gt]), frame.detections.boxes)
    return [g.xyxy for g, row in zip(gt, ious, strict=True) if row.size == 0 or row.max() < 0.3]


def render_frame(frame: ClipFrame, scale: int = 2, title: str = "", colors: int = 24) -> Image.Image:
    """A palette ("P") image: the frame in ``colors`` adaptive colours plus the reserved overlay colours."""
    h, w = frame.image.shape[:2]
    img = Image.fromarray(frame.image).resize((w * scale, h * scale), Image.Resampling.NEAREST)
    q = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = (q.getpalette() or [])[: colors * 3]
    palette += [0] * (colors * 3 - len(palette))
    index = {name: colors + i for i, name in enumerate(OVERLAY)}
    for rgb in OVERLAY.values():
        palette += list(rgb)
    canvas = Image.new("P", (img.width, img.height + CAPTION_H), index["black"])
    canvas.putpalette(palette)
    canvas.paste(q, (0, CAPTION_H))
    draw = ImageDraw.Draw(canvas)

    def rect(xyxy: Sequence[float], colour: str, width: int) -> None:
        x0, y0, x1, y1 = (float(v) * scale for v in xyxy)
        draw.rectangle(
            [x0, y0 + CAPTION_H, max(x1 - 1, x0), max(y1 - 1, y0) + CAPTION_H],
            outline=index[colour],
            width=width,
        )

    for box in _missed(frame):
        rect(box, "missed", max(1, scale // 2))
    for box, cat in zip(frame.detections.boxes.tolist(), frame.detections.category_ids.tolist(), strict=True):
        rect(box, CLASS_KEYS.get(int(cat), "white"), max(1, scale))
    if frame.ego_box is not None:
        rect(frame.ego_box, "ego", max(1, scale // 2))
    draw.text((3, 0), f"{title}  {frame.text}".strip(), fill=index["white"])
    return canvas


def make_gif(
    frames: Sequence[ClipFrame],
    *,
    scale: int = 2,
    fps: int = 5,
    title: str = "",
    frame_step: int = 1,
    colors: int = 24,
) -> bytes:
    """Encode every ``frame_step``-th frame (always ending on the failure) as a looping GIF.

    Sensor noise makes every frame expensive for GIF's LZW; a small palette and a frame step keep
    a 6 s clip under ~1 MB at 2x.
    """
    if not frames:
        raise ValueError("no frames to encode")
    picked = list(frames[::frame_step])
    if picked[-1] is not frames[-1]:
        picked.append(frames[-1])
    images = [render_frame(f, scale, title, colors) for f in picked]
    buf = io.BytesIO()
    images[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=images[1:],
        duration=round(1000 * frame_step / fps),
        loop=0,
        optimize=False,
        disposal=1,
    )
    return buf.getvalue()
