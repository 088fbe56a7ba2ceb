"""Short GIF clips of failing runs: the perceived frame with what the model reported.

Each clip is the last few seconds before the failure (``clips.seconds``), upscaled (nearest),
showing the weathered frame the engine saw, its detections (solid, class colour), the ground
truth it missed (thin white outline: a box with no detection over it), the ego (blue) and a
caption with time and speed. GIFs are deterministic bytes for the same frames.

Domain code: no dagster import.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from adas_assets.detector.postprocess import box_iou
from adas_assets.simulation.closed_loop import ClipFrame

CLASS_COLOURS: dict[int, tuple[int, int, int]] = {1: (0, 255, 0), 2: (255, 40, 40), 3: (255, 230, 0)}
EGO_COLOUR = (60, 140, 255)
MISSED_COLOUR = (255, 255, 255)
CAPTION_H = 12


def draw_frame(frame: ClipFrame, scale: int = 2, title: str = "") -> Image.Image:
    img = Image.fromarray(frame.image).resize(
        (frame.image.shape[1] * scale, frame.image.shape[0] * scale), Image.Resampling.NEAREST
    )
    canvas = Image.new("RGB", (img.width, img.height + CAPTION_H), (0, 0, 0))
    canvas.paste(img, (0, CAPTION_H))
    draw = ImageDraw.Draw(canvas)

    def rect(xyxy: Sequence[float], colour: tuple[int, int, int], width: int) -> None:
        x0, y0, x1, y1 = (float(v) * scale for v in xyxy)
        draw.rectangle(
            [x0, y0 + CAPTION_H, max(x1 - 1, x0), max(y1 - 1, y0) + CAPTION_H], outline=colour, width=width
        )

    gt = [g for g in frame.gt if not g.is_ego]
    if gt:
        ious = box_iou(np.asarray([g.xyxy for g in gt]), frame.detections.boxes)
        for g, row in zip(gt, ious, strict=True):
            if row.size == 0 or row.max() < 0.3:
                rect(g.xyxy, MISSED_COLOUR, 1)
    for box, cat in zip(frame.detections.boxes.tolist(), frame.detections.category_ids.tolist(), strict=True):
        rect(box, CLASS_COLOURS.get(int(cat), (255, 0, 255)), 2)
    if frame.ego_box is not None:
        rect(frame.ego_box, EGO_COLOUR, 1)
    draw.text((3, 0), f"{title}  {frame.text}".strip(), fill=(255, 255, 255))
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
    """Encode the frames as a looping GIF (every ``frame_step``-th frame, adaptive palette, deterministic).

    Sensor noise makes every frame expensive for GIF's LZW; a small palette and a frame step keep
    a 6 s clip under ~1 MB at 2x.
    """
    if not frames:
        raise ValueError("no frames to encode")
    picked = list(frames[::frame_step])
    if picked[-1] is not frames[-1]:
        picked.append(frames[-1])  # always end on the failure itself
    images = [
        draw_frame(f, scale, title).quantize(
            colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE
        )
        for f in picked
    ]
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


def thumbnail_gif(gif: bytes, factor: float = 0.5, colors: int = 16, max_frames: int = 12) -> bytes:
    """A smaller copy of a clip (for embedding in a report)."""
    src = Image.open(io.BytesIO(gif))
    n = getattr(src, "n_frames", 1)
    step = max(1, -(-n // max_frames))
    frames = []
    for i in range(0, n, step):
        src.seek(i)
        im = src.convert("RGB")
        im = im.resize(
            (max(1, int(im.width * factor)), max(1, int(im.height * factor))), Image.Resampling.BILINEAR
        )
        frames.append(im.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE))
    duration = int(src.info.get("duration", 200)) * step
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=duration, loop=0)
    return buf.getvalue()
