"""Visual check of the generator: one frame per scenario with its boxes, and one frame under
every weather / lighting condition, in one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageDraw

from adas.datasets.config import DatagenConfig
from adas.datasets.scene_plan import scene_seed
from adas.datasets.simulator import Box, RenderedFrame, SceneSimulator
from adas.datasets.weather import apply_weather

_BOX_COLORS: Final[dict[int, tuple[int, int, int]]] = {1: (0, 255, 0), 2: (255, 40, 40), 3: (255, 230, 0)}


def draw_boxes(img: np.ndarray, boxes: Sequence[Box], scale: int = 2) -> Image.Image:
    """Upscale (nearest) and outline each box in its class colour: car green, truck red, motorcycle yellow."""
    pil = Image.fromarray(img).resize((img.shape[1] * scale, img.shape[0] * scale), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(pil)
    for b in boxes:
        x, y, w, h = (c * scale for c in b.bbox)
        draw.rectangle([x, y, x + w - 1, y + h - 1], outline=_BOX_COLORS.get(b.category_id, (255, 255, 255)))
    return pil


def render_box_overlay(path: Path, config: DatagenConfig, seed: int | None = None, severity: int = 3) -> Path:
    """Write a PNG: a dense frame of each scenario with GT boxes, then one frame under each condition."""
    seed = config.seed if seed is None else seed
    rows: list[tuple[str, Image.Image]] = []
    highway: RenderedFrame | None = None
    for i, scenario in enumerate(config.scenarios):
        rng = np.random.default_rng([seed, 900 + i])
        sim = SceneSimulator(config, scenario, "dense", scene_seed(seed, 900 + i), rng)
        try:
            sim.advance(3.0)
            fr = sim.render()
        finally:
            sim.close()
        if highway is None:
            highway = fr
        rows.append((f"{scenario} (dense, clean)", draw_boxes(fr.image, fr.boxes)))
    assert highway is not None
    conditions = [
        ("clear", "day"),
        ("fog", "day"),
        ("rain", "day"),
        ("snow", "day"),
        ("clear", "night"),
        ("clear", "glare"),
    ]
    for weather, lighting in conditions:
        img = apply_weather(
            highway.image,
            weather,
            lighting,
            np.random.default_rng([seed, 1]),
            severity,
            noise_sigma=config.sensor_noise.sigma,
            blur_sigma=config.sensor_noise.blur_sigma_px,
        )
        rows.append((f"{weather}/{lighting} severity {severity}", draw_boxes(img, highway.boxes)))
    label_h = 14
    width = max(im.width for _, im in rows)
    canvas = Image.new("RGB", (width, sum(im.height + label_h for _, im in rows)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = 0
    for label, im in rows:
        draw.text((4, y + 1), label, fill=(0, 0, 0))
        canvas.paste(im, (0, y + label_h))
        y += im.height + label_h
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
