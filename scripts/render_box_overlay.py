"""Render docs/img/generator_boxes.png: a dense frame per scenario with its ground-truth boxes,
then the highway frame under every weather/lighting condition (boxes: car green, truck red,
motorcycle yellow).

Usage: python scripts/render_box_overlay.py [--config config/datagen.yaml] [--out docs/img/generator_boxes.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adas.datasets.config import DEFAULT_CONFIG_PATH, load_datagen_config
from adas.datasets.overlay import render_box_overlay

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img" / "generator_boxes.png")
    parser.add_argument("--severity", type=int, default=3)
    args = parser.parse_args()
    path = render_box_overlay(args.out, load_datagen_config(args.config), severity=args.severity)
    print(path)


if __name__ == "__main__":
    main()
