"""The full evaluation of one engine (one device x precision cell) against production.

:func:`evaluate_engine` is what the ``eval_report`` asset and ``scripts/benchmark_evaluation.py``
call: predictions of both engines on the same frames, primary metrics, slices with deltas,
calibration, robustness (corruptions, sensor faults, temporal stress), OOD probes, drift and a
preview of the gates. It returns every report body and file; writing them is the caller's job
(:mod:`adas.evaluation.reports`). Domain code: no Dagster import.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from adas.evaluation import calibration as cal
from adas.evaluation import ood as ood_mod
from adas.evaluation import robustness as rob
from adas.evaluation.config import EvaluationSettings, Profile
from adas.evaluation.corruptions import plot_decay, robustness_sweep
from adas.evaluation.drift import drift_report
from adas.evaluation.evidence import CalibrationSpec, PairedEvidence, paired_evidence
from adas.evaluation.forest_plot import forest_rows, plot_forest
from adas.evaluation.gates import (
    GatesConfig,
    GateVerdict,
    Latency,
    MetricsSnapshot,
    SliceStat,
    default_gates,
    evaluate_gates,
)
from adas.evaluation.matching import match_same_class
from adas.evaluation.primary import PrimaryResult, evaluate_primary, plot_confusion, plot_pr_curves
from adas.evaluation.runner import Engine, Predictions, predict, predict_fn
from adas.evaluation.sensor_faults import fault_frames, sensor_fault_check
from adas.evaluation.slices import SliceSpec, slice_metrics, slice_table
from adas.intake.contract import Contract


@dataclass
class ModelUnderTest:
    label: str  # "candidate" / "production"
    version: str
    engine: Engine
    contract: Contract


@dataclass
class EvalData:
    """Ground truth and frames (model-input size) of the evaluated split, plus optional extras."""

    gt: dict[str, Any]
    image_ids: list[int]
    frames: np.ndarray
    slices: list[SliceSpec]
    size_hw: tuple[int, int]
    scales: list[tuple[float, float]] | None = None
    replay: dict[str, Any] | None = None
    replay_ids: list[int] = field(default_factory=list)
    replay_frames: np.ndarray | None = None
    # The split proper (primary metrics, calibration, OOD); other frames (challenge suites) only
    # feed their own slices. Default: every frame.
    split_ids: list[int] | None = None


@dataclass
class EvaluationOutcome:
    eval_report: dict[str, Any]
    robustness_report: dict[str, Any]
    slice_frame: pl.DataFrame
    snapshot: MetricsSnapshot
    production_snapshot: MetricsSnapshot | None
    verdict_preview: GateVerdict
    evidence: PairedEvidence | None
    candidate_predictions: Predictions
    production_predictions: Predictions | None
    primary: PrimaryResult
    files: dict[str, bytes]
    timings_s: dict[str, float]


def _evenly(ids: Sequence[int], n: int) -> list[int]:
    if n >= len(ids):
        return list(ids)
    idx = np.linspace(0, len(ids) - 1, n).round().astype(int)
    return [ids[i] for i in sorted(set(idx.tolist()))]


def snapshot(
    version: str,
    per_slice: Mapping[str, Mapping[str, Any]],
    slices: Sequence[SliceSpec],
    calib: Mapping[str, Any],
) -> MetricsSnapshot:
    """What the gates read, from slice metrics (``all`` = the whole split) and calibration."""

    def d(v: float | None) -> float | None:
        return None if v is None or v < 0 else float(v)

    overall = per_slice.get("all") or next(iter(per_slice.values()))
    return MetricsSnapshot(
        version=version,
        AP=d(overall["AP"]),
        AP50=d(overall["AP50"]),
        per_class_AP={k: d(v) for k, v in overall["per_class_AP"].items()},
        per_class_AP50={k: d(v) for k, v in overall["per_class_AP50"].items()},
        slices={
            s.name: SliceStat(
                AP=d(per_slice[s.name]["AP"]),
                AP50=d(per_slice[s.name]["AP50"]),
                images=int(per_slice[s.name]["num_images"]),
                critical=s.critical,
            )
            for s in slices
        },
        ece=calib.get("ece"),
        dece=calib.get("dece"),
    )


def detection_calibration(
    gt: Mapping[str, Any],
    preds: Predictions,
    image_ids: Sequence[int],
    settings: EvaluationSettings,
    operating: float,
) -> dict[str, Any]:
    matched = match_same_class(gt, preds.records(), image_ids, settings.match_iou)
    parts = settings.calibration.dece_bins
    w_edges, _ = cal.size_edges(gt, image_ids, parts["width"])
    _, h_edges = cal.size_edges(gt, image_ids, parts["height"])
    names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
    return cal.calibration_report(
        matched,
        names,
        bins=settings.calibration.bins,
        dece_bins=parts,
        w_edges=w_edges,
        h_edges=h_edges,
        operating_threshold=operating,
        min_detections_for_threshold=settings.calibration.min_detections_for_threshold,
    )


def evaluate_engine(
    candidate: ModelUnderTest,
    production: ModelUnderTest | None,
    data: EvalData,
    settings: EvaluationSettings,
    *,
    profile: Profile = "standard",
    latency: Latency | None = None,
    budget_p95_ms: float | None = None,
    gates: GatesConfig | None = None,
    title: str = "",
    production_predictions: Predictions | None = None,
    log: Callable[[str], None] = lambda _s: None,
) -> EvaluationOutcome:
    """Everything the eval report holds, for ``candidate`` (and ``production`` on the same frames)."""
    timings: dict[str, float] = {}
    contract = candidate.contract
    operating = float(contract.postprocess.score_threshold)
    thr = settings.score_threshold
    title = title or f"{contract.model_name} {candidate.version}"
    gt, ids = data.gt, data.image_ids

    t = time.perf_counter()
    cand = predict(
        candidate.engine,
        data.frames,
        ids,
        contract,
        score_threshold=thr,
        batch_size=settings.batch_size,
        scales=data.scales,
    )
    timings["inference_candidate"] = time.perf_counter() - t
    log(f"candidate: {len(cand)} frames in {cand.seconds:.1f}s, {len(cand.records())} detections")
    prod: Predictions | None = production_predictions
    if prod is None and production is not None:
        t = time.perf_counter()
        prod = predict(
            production.engine,
            data.frames,
            ids,
            production.contract,
            score_threshold=thr,
            batch_size=settings.batch_size,
            scales=data.scales,
        )
        timings["inference_production"] = time.perf_counter() - t
        log(f"production: {len(prod)} frames in {prod.seconds:.1f}s")

    t = time.perf_counter()
    split_ids = [int(i) for i in (data.split_ids if data.split_ids is not None else ids)]
    split_set = set(split_ids)
    primary = evaluate_primary(gt, cand.records(), split_ids, operating, settings.match_iou)
    cand_slices = slice_metrics(gt, cand.records(), data.slices)
    prod_slices = slice_metrics(gt, prod.records(), data.slices) if prod is not None else None
    table = slice_table(gt, cand_slices, data.slices, prod_slices)
    timings["primary_and_slices"] = time.perf_counter() - t

    t = time.perf_counter()
    cand_cal = detection_calibration(gt, cand, split_ids, settings, operating)
    prod_cal = (
        detection_calibration(
            gt,
            prod,
            split_ids,
            settings,
            float(production.contract.postprocess.score_threshold) if production else operating,
        )
        if prod is not None
        else None
    )
    timings["calibration"] = time.perf_counter() - t

    cand_snap = snapshot(candidate.version, cand_slices, data.slices, cand_cal)
    prod_snap = (
        snapshot(production.version if production else "production", prod_slices, data.slices, prod_cal or {})
        if prod is not None and prod_slices is not None
        else None
    )

    # Robustness: corruptions on clean frames, sensor faults, temporal stress on replay.
    t = time.perf_counter()
    rs = settings.robustness
    run = predict_fn(candidate.engine, contract, thr, settings.batch_size)
    base = next((s for s in data.slices if s.name == rs.base_slice), None)
    base_ids = [i for i in (base.image_ids if base else split_ids) if i in split_set]
    chosen = _evenly(base_ids, rs.frames_for(profile, len(base_ids)))
    index = {int(i): k for k, i in enumerate(ids)}
    rob_frames = data.frames[[index[i] for i in chosen]] if chosen else data.frames[:0]
    clean = cand.subset(chosen).detections
    corruption = robustness_sweep(
        run, rob_frames, chosen, gt, rs.corruptions, rs.severities, rs.seed, clean=clean
    )
    corruption["base_slice"] = rs.base_slice if base else "all"
    timings["robustness_corruptions"] = time.perf_counter() - t
    log(
        f"robustness: {len(chosen)} frames x {len(rs.corruptions)} corruptions x {len(rs.severities)} severities"
    )
    if profile == "full" and production is not None:
        t = time.perf_counter()
        prun = predict_fn(production.engine, production.contract, thr, settings.batch_size)
        pc = robustness_sweep(prun, rob_frames, chosen, gt, rs.corruptions, rs.severities, rs.seed)
        corruption["production"] = {"clean": pc["clean"], "mPC": pc["mPC"], "rPC": pc["rPC"]}
        timings["robustness_production"] = time.perf_counter() - t
    t = time.perf_counter()
    faults = sensor_fault_check(
        run, data.size_hw, rs.sensor_faults, rs.sensor_fault_frames, operating, rs.seed
    )
    temporal: dict[str, Any] | None = None
    if data.replay is not None and data.replay_frames is not None and len(data.replay_ids):
        rp = predict(
            candidate.engine,
            data.replay_frames,
            data.replay_ids,
            contract,
            score_threshold=thr,
            batch_size=settings.batch_size,
        )
        blank = run(fault_frames("black", 1, *data.size_hw))[0]
        ts = rs.temporal
        temporal = rob.temporal_stress(
            data.replay,
            rp.by_image(),
            operating,
            drop_probability=ts.drop_probability,
            jitter_std_s=ts.jitter_std_s,
            out_of_order_batch=ts.out_of_order_batch,
            tracker_iou=ts.tracker_iou,
            tracker_max_age=ts.tracker_max_age,
            min_continuity_ratio=ts.min_continuity_ratio,
            blank_detections=blank,
            seed=rs.seed,
        )
    timings["robustness_faults_temporal"] = time.perf_counter() - t

    # OOD probes vs in-distribution frames of the split.
    t = time.perf_counter()
    os_ = settings.ood
    in_ids = _evenly(split_ids, os_.in_distribution_frames)
    in_p = cand.subset(in_ids)
    probe, kinds = ood_mod.ood_probe_frames(os_.frames, data.size_hw, os_.seed)
    probe_p = predict(
        candidate.engine,
        probe,
        list(range(len(probe))),
        contract,
        score_threshold=thr,
        batch_size=settings.batch_size,
    )
    ood = ood_mod.ood_report(
        in_p.max_score,
        in_p.energy,
        in_p.detections,
        probe_p.max_score,
        probe_p.energy,
        probe_p.detections,
        kinds,
        operating,
    )
    ood["uncertainty"] = {
        "nll": cand_cal.get("nll"),
        "brier": cand_cal.get("brier"),
        "note": "NLL/Brier of TP-vs-FP under the detection score (the sigmoid heatmap is a probability)",
    }
    timings["ood"] = time.perf_counter() - t

    files: dict[str, bytes] = {}
    drift_summary: dict[str, Any] | None = None
    if prod is not None and settings.drift.enabled:
        t = time.perf_counter()
        names = {int(c["id"]): str(c["name"]) for c in gt["categories"]}
        html, drift_summary = drift_report(
            cand.subset(split_ids), prod.subset(split_ids), names, data.size_hw, operating
        )
        for name, body in html.items():
            files[f"drift_{name}.html"] = body
        timings["drift"] = time.perf_counter() - t

    evidence: PairedEvidence | None = None
    gates_cfg = gates or default_gates()
    if prod is not None:
        t = time.perf_counter()
        conf = gates_cfg.confidence
        prod_operating = float(production.contract.postprocess.score_threshold) if production else operating
        evidence = paired_evidence(
            gt,
            cand.records(),
            prod.records(),
            split_ids,
            {s.name: s.image_ids for s in data.slices},
            class_weights=gates_cfg.weighted_map.class_weights,
            recall_classes=gates_cfg.safety_recall.classes,
            operating_thresholds=(operating, prod_operating),
            calibration=CalibrationSpec(
                metric=gates_cfg.calibration.metric,
                match_iou=settings.match_iou,
                bins=settings.calibration.bins,
                dece_bins=settings.calibration.dece_bins,
            ),
            resamples=conf.resamples,
            seed=conf.seed,
            confidence=conf.level,
        )
        timings["paired_bootstrap"] = time.perf_counter() - t
        log(
            f"paired bootstrap: {conf.resamples} resamples over {evidence.n_images} images and "
            f"{len(evidence.slices)} slices in {evidence.seconds:.1f}s"
        )
    verdict = evaluate_gates(cand_snap, prod_snap, latency, budget_p95_ms, gates_cfg, evidence=evidence)

    t = time.perf_counter()
    files["plots/pr_curves.png"] = plot_pr_curves(primary, f"{title}: PR curves")
    files["plots/confusion_matrix.png"] = plot_confusion(primary, title)
    files["plots/reliability.png"] = cal.plot_reliability(cand_cal, f"{title}: reliability")
    files["plots/robustness_decay.png"] = plot_decay(corruption, f"{title}: AP vs corruption severity")
    if evidence is not None:
        files["plots/delta_forest.png"] = plot_forest(
            forest_rows(evidence, verdict.decisions),
            f"{title}: candidate - production ({verdict.verdict.upper()})",
            evidence.confidence,
        )
    files["predictions.json"] = cand.to_json()
    if prod is not None:
        files["production_predictions.json"] = prod.to_json()
    timings["plots"] = time.perf_counter() - t

    robustness_report = {
        "format": "adas-robustness-report v1",
        "profile": profile,
        "corruptions": corruption,
        "sensor_faults": faults,
        "temporal": temporal,
    }
    eval_report: dict[str, Any] = {
        "format": "adas-eval-report v1",
        "profile": profile,
        "candidate": {"version": candidate.version, "model_name": contract.model_name, "task": contract.task},
        "production": None if production is None else {"version": production.version},
        "baseline_available": prod is not None,
        "frames": len(split_ids),
        "score_threshold_eval": thr,
        "operating_threshold": operating,
        "primary": primary.to_json(),
        "production_primary": None if prod_slices is None else prod_slices.get("all"),
        "slices": table.to_dicts(),
        "calibration": cand_cal,
        "production_calibration": prod_cal,
        "robustness_summary": {
            "clean_AP": corruption["clean"]["AP"],
            "mPC": corruption["mPC"],
            "rPC": corruption["rPC"],
            "worst_corruptions": corruption["worst_corruptions"],
            "sensor_faults_passed": faults["passed"],
            "temporal_unstable_conditions": None if temporal is None else temporal["unstable_conditions"],
        },
        "ood": ood,
        "drift": drift_summary,
        "latency": None if latency is None else latency.model_dump(),
        "gates_preview": verdict.model_dump(),
        "paired_evidence": None if evidence is None else evidence.model_dump(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    return EvaluationOutcome(
        eval_report=eval_report,
        robustness_report=robustness_report,
        slice_frame=table,
        snapshot=cand_snap,
        production_snapshot=prod_snap,
        verdict_preview=verdict,
        evidence=evidence,
        candidate_predictions=cand,
        production_predictions=prod,
        primary=primary,
        files=files,
        timings_s=timings,
    )
