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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from adas.evaluation.bootstrap import MatchTable, PairedDeltas, paired_bootstrap
from adas.evaluation.calibration import calibration_bins, size_edges, weighted_calibration_error
from adas.evaluation.matching import MatchedDetections, match_same_class
from adas.stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Interval, percentile_interval, resample_weights

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
    # Candidate - production calibration error on the split (``calibration_metric``: ece | dece).
    calibration: DeltaInterval | None = None
    calibration_metric: str = "ece"
    seconds: float = Field(default=0.0, description="wall time of the bootstrap")

    def delta(self, metric: str, slice_name: str | None = None) -> DeltaInterval | None:
        table = self.overall if slice_name is None else self.slices.get(slice_name, {})
        return table.get(metric)


@dataclass(frozen=True)
class CalibrationSpec:
    """How the evaluation bins calibration (:func:`adas.evaluation.pipeline.detection_calibration`)."""

    metric: str = "ece"  # ece | dece
    match_iou: float = 0.5
    bins: int = 10
    dece_bins: Mapping[str, int] = field(default_factory=lambda: {"confidence": 5, "width": 3, "height": 3})


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
    calibration: CalibrationSpec | None = CalibrationSpec(),
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    workers: int = 2,
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
    images = {name: len(ids) for name, ids in slices.items()}

    def one_scope(ids: Sequence[int], weighted: Mapping[str, float] | None) -> PairedDeltas:
        return paired_bootstrap(
            cand,
            prod,
            image_ids=[int(i) for i in ids],
            n_resamples=resamples,
            seed=seed,
            confidence=confidence,
            recall_classes=recall,
            score_threshold=operating_thresholds,
            class_weights=weighted,
        )

    # The split, every slice and the calibration delta are independent, and their work is numpy
    # that releases the GIL (cumulative sums, searchsorted, matrix products): a pool of two threads
    # keeps both cores of a small runner busy, the split's bootstrap (the largest job) first. Each
    # job seeds its own generator, so the result does not depend on the scheduling (tested).
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        overall_job = pool.submit(one_scope, split_ids, weights)
        calibration_job = (
            None
            if calibration is None
            else pool.submit(
                _calibration_delta,
                gt,
                candidate_records,
                production_records,
                split_ids,
                calibration,
                resamples,
                seed,
                confidence,
            )
        )
        slice_jobs = {name: pool.submit(one_scope, ids, None) for name, ids in slices.items() if ids}
        overall = overall_job.result()
        per_slice = {name: _defined(job.result().intervals) for name, job in slice_jobs.items()}
        calibration_delta = None if calibration_job is None else calibration_job.result()
    return PairedEvidence(
        resamples=resamples,
        seed=seed,
        confidence=confidence,
        n_images=overall.n_images,
        overall=_defined(overall.intervals),
        slices=per_slice,
        slice_images=images,
        class_weights=dict(weights or {}),
        calibration=calibration_delta,
        calibration_metric=calibration.metric if calibration else "ece",
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


def _calibration_delta(
    gt: Mapping[str, Any],
    candidate_records: list[dict[str, Any]],
    production_records: list[dict[str, Any]],
    split_ids: Sequence[int],
    spec: CalibrationSpec,
    resamples: int,
    seed: int,
    confidence: float,
) -> DeltaInterval | None:
    ids = [int(i) for i in split_ids]
    cm = match_same_class(gt, candidate_records, ids, spec.match_iou)
    pm = match_same_class(gt, production_records, ids, spec.match_iou)
    w_edges, _ = size_edges(gt, ids, spec.dece_bins["width"])
    _, h_edges = size_edges(gt, ids, spec.dece_bins["height"])

    def bins(m: MatchedDetections) -> np.ndarray:
        return calibration_bins(m, spec.metric, spec.bins, spec.dece_bins, w_edges, h_edges)

    return paired_calibration_delta(
        cm, pm, bins(cm), bins(pm), ids, resamples=resamples, seed=seed, confidence=confidence
    )


def paired_calibration_delta(
    candidate: MatchedDetections,
    production: MatchedDetections,
    candidate_bins: np.ndarray,
    production_bins: np.ndarray,
    image_ids: Sequence[int],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> DeltaInterval | None:
    """Candidate minus production calibration error (ECE or D-ECE, as the bins say) on the same
    resampled images; ``None`` when either model has no detection to calibrate."""
    if not len(candidate) or not len(production):
        return None
    index = {int(i): k for k, i in enumerate(image_ids)}
    c_img = np.array([index[int(i)] for i in candidate.image_ids])
    p_img = np.array([index[int(i)] for i in production.image_ids])
    rng = np.random.default_rng(seed)

    def delta(w: np.ndarray) -> np.ndarray:
        c = weighted_calibration_error(candidate_bins, candidate.scores, candidate.tp, w[:, c_img])
        p = weighted_calibration_error(production_bins, production.scores, production.tp, w[:, p_img])
        return c - p

    point = float(delta(np.ones((1, len(index))))[0])
    samples = [
        delta(resample_weights(len(index), min(250, resamples - start), rng))
        for start in range(0, resamples, 250)
    ]
    interval = percentile_interval(np.concatenate(samples), point, len(index), confidence)
    if any(math.isnan(x) for x in (interval.point, interval.low, interval.high)):
        return None
    return DeltaInterval.of(interval)
