"""Offline evaluation of detector outputs (COCO metrics)."""

from adas.evaluation.coco_metrics import STAT_NAMES, coco_metrics

__all__ = ["STAT_NAMES", "coco_metrics"]
