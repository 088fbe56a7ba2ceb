"""CLI: ``python -m adas.datasets --out DIR [--config config/datagen.yaml] [--size demo|tiny]``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from adas.config_errors import ConfigError
from adas.datasets.config import DEFAULT_CONFIG_PATH, load_datagen_config
from adas.datasets.generator import generate_dataset
from adas.datasets.overlay import render_box_overlay


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adas.datasets", description=__doc__)
    parser.add_argument("--out", type=Path, required=True, help="output dataset directory")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH)
    parser.add_argument("--size", default="demo", help="a size defined in the config (demo, tiny)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--overlay", type=Path, default=None, help="also write a box-overlay PNG here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_datagen_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    summary = generate_dataset(args.out, config, size=args.size, workers=args.workers)
    if args.overlay is not None:
        render_box_overlay(args.overlay, config)
    print(json.dumps(summary.model_dump(), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
