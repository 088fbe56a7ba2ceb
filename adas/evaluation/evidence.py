"""Paired evidence: the interval of every candidate-minus-production delta the gates read.

:func:`paired_evidence` matches each model's detections once (:class:`MatchTable`) and runs the
paired bootstrap (:func:`adas.evaluation.bootstrap.paired_bootstrap`) over the evaluated split
and over every slice, with the same image draws for both models. The result is a plain,
serializable record (:class:`PairedEvidence`) that travels with the evaluation to the gate, the
reports, the registry entry and the UI, so a verdict is always decided from, and shown with,
the intervals it quotes. Domain code: no Dagster import.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adas.evaluation.bootstrap import MatchTable, paired_bootstrap
from adas.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Interval

METHOD = "paired percentile bootstrap over images"


class DeltaInterval(BaseModel):
    """A delta (candidate - production, a fraction: 0.012 = +1.2 AP points) and its interval."""

    model_config = ConfigDict(frozen=True)

    point: float
    low: float
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE

    @classmethod
    def of(cls, interval: Interval) -> DeltaInterval:
        return cls(
            point=interval.point,
            low=interval.low,
            high=interval.high,
            n=interval.n,
            confidence=interval.confidence,
        )

    @property
    def interval(self) -> Interval:
        return Interval(self.point, self.low, self.high, self.n, self.confidence)

    def points(self) -> str:
        """In AP points: ``+1.20 [-0.40, +2.80] (n = 96)``: what reports, cards and approvals quote."""
        return self.interval.format(scale=100.0)


class PairedEvidence(BaseModel):
    """Every paired delta of one evaluation. Keys of ``overall`` and of each slice's dict:
    ``AP``, ``AP50``, ``AP/<class>``, ``weighted_AP``, ``weighted_AP50`` (with class weights) and
    ``recall/<class>`` (recall at each model's operating threshold, IoU 0.5)."""

    model_config = ConfigDict(frozen=True)

    method: str = METHOD
    resamples: int
    seed: int
    confidence: float
    n_images: int
    overall: dict[str, DeltaInterval]
    slices: dict[str, dict[str, DeltaInterval]] = {}
    slice_images: dict[str, int] = {}
    class_weights: dict[str, float] = {}
    seconds: float = Field(default=0.0, description="wall time of the bootstrap")

    def delta(self, metric: str, slice_name: str | None = None) -> DeltaInterval | None:
        table = self.overall if slice_name is None else self.slices.get(slice_name, {})
        return table.get(metric)


def paired_evidence(
    gt: Mapping[str, Any],
    candidate_records: list[dict[str, Any]],
    production_records: list[dict[str, Any]],
    split_ids: Sequence[int],
    slices: Mapping[str, Sequence[int]],
    *,
    class_weights: Mapping[str, float] | None = None,
    recall_classes: Sequence[str] = (),
    operating_thresholds: tuple[float, float] = (0.3, 0.3),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> PairedEvidence:
    """Paired intervals over ``split_ids`` (overall) and over each slice's images.

    ``slices``: name -> image ids (slices may hold images outside the split, e.g. challenge
    suites); each slice resamples its own images only. Every slice gets the same seed, so a
    re-run reproduces every interval exactly.
    """
    t0 = time.perf_counter()
    every = sorted({int(i) for i in split_ids} | {int(i) for ids in slices.values() for i in ids})
    cand = MatchTable.from_coco(gt, candidate_records, every)
    prod = MatchTable.from_coco(gt, production_records, every)
    known = {c.name for c in cand.classes}
    weights = {k: v for k, v in (class_weights or {}).items() if k in known} or None
    recall = [c for c in recall_classes if c in known]
    overall = paired_bootstrap(
        cand,
        prod,
        image_ids=[int(i) for i in split_ids],
        n_resamples=resamples,
        seed=seed,
        confidence=confidence,
        recall_classes=recall,
        score_threshold=operating_thresholds,
        class_weights=weights,
    )
    per_slice: dict[str, dict[str, DeltaInterval]] = {}
    images: dict[str, int] = {}
    for name, ids in slices.items():
        images[name] = len(ids)
        if not ids:
            continue
        deltas = paired_bootstrap(
            cand,
            prod,
            image_ids=[int(i) for i in ids],
            n_resamples=resamples,
            seed=seed,
            confidence=confidence,
            recall_classes=recall,
            score_threshold=operating_thresholds,
        )
        per_slice[name] = _defined(deltas.intervals)
    return PairedEvidence(
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        n_images=overall.n_images,
        overall=_defined(overall.intervals),
        slices=per_slice,
        slice_images=images,
        class_weights=dict(weights or {}),
        seconds=round(time.perf_counter() - t0, 3),
    )


def _defined(intervals: Mapping[str, Interval]) -> dict[str, DeltaInterval]:
    """The intervals that exist: a metric undefined on the data (a class without ground truth
    in a slice) is left out, and the gate reading it says so, rather than storing NaN."""
    return {
        k: DeltaInterval.of(v)
        for k, v in intervals.items()
        if not any(math.isnan(x) for x in (v.point, v.low, v.high))
    }
