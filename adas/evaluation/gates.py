"""Regression gates from ``config/gates.yaml``: a green/red verdict with its rationale.

Four gates, each ``pass``, ``fail`` or ``skipped`` (with the reason):

1. **weighted mAP**: sum_c w_c AP_c / sum_c w_c over the classes with ground truth must be at
   least production + ``min_improvement_points`` (or ``min_without_baseline`` with no baseline).
   A class absent from the ground truth has no AP and is left out of both sides, by name.
2. **critical slices**: no critical slice may lose more than ``max_relative_regression`` of its
   production AP; thinner slices than ``min_images`` are reported, not gated.
3. **latency**: the engine's p95 at batch 1 within the target's budget (``targets.yaml``).
4. **calibration**: candidate ECE (or D-ECE) <= production + ``max_increase``.

Red = any gate failed (or, with ``missing_baseline: block``, no baseline). A red verdict carries
a blocking report naming the failing slices: the input of the data-mining loop (written by
:mod:`adas.evaluation.reports`).

Kept as one module (about 430 lines) because the gates' configuration, the snapshot they read
and the four rules are one contract: ``config/gates.yaml`` means what this file says, read top
to bottom.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adas.config_errors import load_yaml_model
from adas.evaluation.config import file_sha256
from adas.settings import CONFIG_DIR

GATES_FILE = CONFIG_DIR / "gates.yaml"
Status = Literal["pass", "fail", "skipped"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WeightedMapGate(_Strict):
    metric: Literal["AP", "AP50"] = "AP"
    class_weights: dict[str, float] = Field(min_length=1)
    min_improvement_points: float = 1.5
    min_without_baseline: float = Field(default=0.3, ge=0, le=1)

    @field_validator("class_weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: w for k, w in v.items() if w <= 0}
        if bad:
            raise ValueError(f"class weights must be > 0, got {bad}")
        return v


class CriticalSliceGate(_Strict):
    metric: Literal["AP", "AP50"] = "AP"
    max_relative_regression: float = Field(default=0.02, ge=0, le=1)
    min_images: int = Field(default=30, ge=1)
    slices: list[str] | None = None


class LatencyGate(_Strict):
    percentile: Literal["p95"] = "p95"


class CalibrationGate(_Strict):
    metric: Literal["ece", "dece"] = "ece"
    max_increase: float = Field(default=0.02, ge=0)


class GatesConfig(_Strict):
    version: int = Field(ge=1)
    weighted_map: WeightedMapGate
    critical_slices: CriticalSliceGate = CriticalSliceGate()
    latency: LatencyGate = LatencyGate()
    calibration: CalibrationGate = CalibrationGate()
    missing_baseline: Literal["skip", "block"] = "skip"


def load_gates(path: Path | str = GATES_FILE) -> GatesConfig:
    return load_yaml_model(Path(path), GatesConfig)


@functools.cache
def default_gates() -> GatesConfig:
    return load_gates(GATES_FILE)


# --------------------------------------------------------------------------- inputs and verdict


class SliceStat(BaseModel):
    model_config = ConfigDict(frozen=True)

    AP: float | None
    AP50: float | None = None
    images: int
    critical: bool = False


class MetricsSnapshot(BaseModel):
    """What the gates read from one model's evaluation (fractions; ``None`` = undefined)."""

    model_config = ConfigDict(frozen=True)

    version: str
    AP: float | None
    AP50: float | None = None
    per_class_AP: dict[str, float | None]
    per_class_AP50: dict[str, float | None] = {}
    slices: dict[str, SliceStat]
    ece: float | None = None
    dece: float | None = None


class Latency(BaseModel):
    model_config = ConfigDict(frozen=True)

    p50_ms: float | None = None
    p95_ms: float | None
    source: str
    budget_p95_ms: float | None = None


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    observed: str
    requirement: str
    rationale: str


class FailingSlice(BaseModel):
    model_config = ConfigDict(frozen=True)

    slice: str
    candidate_AP: float | None
    production_AP: float | None
    relative_change: float | None
    images: int


class GateVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    verdict: Literal["green", "red"]
    gates: list[GateResult]
    failing_slices: list[FailingSlice] = []
    rationale: str
    baseline_available: bool
    gates_version: int
    gates_sha256: str

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == "fail"]


def points(v: float | None) -> str:
    """A fraction as percent points with two decimals; ``n/a`` for undefined."""
    return "n/a" if v is None else f"{100 * v:.2f}"


def weighted_map(
    per_class: Mapping[str, float | None], weights: Mapping[str, float], classes: list[str] | None = None
) -> float | None:
    """Weighted mean AP over ``classes`` (default: every class with a weight and a defined AP)."""
    names = classes if classes is not None else [c for c in weights if per_class.get(c) is not None]
    num = den = 0.0
    for c in names:
        v = per_class.get(c)
        if v is None or c not in weights:
            continue
        num += weights[c] * v
        den += weights[c]
    return None if den == 0 else num / den


def _weighted_map_gate(
    cand: MetricsSnapshot, prod: MetricsSnapshot | None, cfg: WeightedMapGate, block_missing: bool
) -> GateResult:
    metric = cfg.metric
    per_c = cand.per_class_AP if metric == "AP" else cand.per_class_AP50
    per_p = None if prod is None else (prod.per_class_AP if metric == "AP" else prod.per_class_AP50)
    absent = sorted(c for c in cfg.class_weights if per_c.get(c) is None)
    unweighted = sorted(c for c in per_c if c not in cfg.class_weights)
    classes = [
        c
        for c in cfg.class_weights
        if per_c.get(c) is not None and (per_p is None or per_p.get(c) is not None)
    ]
    notes = []
    if absent:
        notes.append(f"left out (no ground truth in the evaluated images): {', '.join(absent)}")
    if unweighted:
        notes.append(f"classes without a weight in gates.yaml (not counted): {', '.join(unweighted)}")
    note = f" ({'; '.join(notes)})" if notes else ""
    weights = ", ".join(f"{c} x{cfg.class_weights[c]:g}" for c in classes)
    cand_w = weighted_map(per_c, cfg.class_weights, classes)
    if cand_w is None:
        return GateResult(
            name="weighted_map",
            status="fail",
            observed="undefined",
            requirement="a defined weighted mAP",
            rationale=f"no weighted class has ground truth in the evaluated images: weighted {metric} is undefined{note}",
        )
    if per_p is None:
        if block_missing:
            return GateResult(
                name="weighted_map",
                status="fail",
                observed=f"{points(cand_w)}",
                requirement="a production baseline (missing_baseline: block)",
                rationale="no production baseline for this cell and gates.yaml says missing_baseline: block",
            )
        ok = cand_w >= cfg.min_without_baseline
        return GateResult(
            name="weighted_map",
            status="pass" if ok else "fail",
            observed=f"{points(cand_w)}",
            requirement=f">= {points(cfg.min_without_baseline)} (absolute floor: no production baseline)",
            rationale=(
                f"weighted {metric} ({weights}) {points(cand_w)} "
                f"{'meets' if ok else 'is below'} the no-baseline floor {points(cfg.min_without_baseline)}{note}"
            ),
        )
    prod_w = weighted_map(per_p, cfg.class_weights, classes)
    assert prod_w is not None
    need = prod_w + cfg.min_improvement_points / 100.0
    delta = cand_w - prod_w
    # Rounding guard: a delta printed as +1.50 must not fail on the 16th digit.
    ok = cand_w + 1e-9 >= need
    return GateResult(
        name="weighted_map",
        status="pass" if ok else "fail",
        observed=f"{points(cand_w)} (production {points(prod_w)}, {100 * delta:+.2f} pts)",
        requirement=f">= production + {cfg.min_improvement_points:g} pts = {points(need)}",
        rationale=(
            f"weighted {metric} ({weights}) {'improves' if delta > 0 else 'changes'} by {100 * delta:+.2f} pts "
            f"over production ({points(prod_w)} -> {points(cand_w)}); "
            f"{'meets' if ok else 'misses'} the required +{cfg.min_improvement_points:g}{note}"
        ),
    )


def _critical_slices_gate(
    cand: MetricsSnapshot, prod: MetricsSnapshot | None, cfg: CriticalSliceGate, block_missing: bool
) -> tuple[GateResult, list[FailingSlice]]:
    names = cfg.slices if cfg.slices is not None else [n for n, s in cand.slices.items() if s.critical]
    requirement = f"no critical slice below -{100 * cfg.max_relative_regression:g}% relative {cfg.metric}"
    if not names:
        return GateResult(
            name="critical_slices",
            status="skipped",
            observed="no critical slices",
            requirement=requirement,
            rationale="no slice is marked critical",
        ), []
    if prod is None:
        return GateResult(
            name="critical_slices",
            status="fail" if block_missing else "skipped",
            observed="no baseline",
            requirement=requirement,
            rationale="no production baseline for this cell: slice regressions cannot be measured",
        ), []
    failing: list[FailingSlice] = []
    checked: list[str] = []
    skipped: list[str] = []
    for name in names:
        c = cand.slices.get(name)
        p = prod.slices.get(name)
        if c is None:
            skipped.append(f"{name} (not evaluated)")
            continue
        if c.images < cfg.min_images:
            skipped.append(f"{name} ({c.images} images < {cfg.min_images})")
            continue
        cv = c.AP if cfg.metric == "AP" else c.AP50
        pv = None if p is None else (p.AP if cfg.metric == "AP" else p.AP50)
        if cv is None or pv is None:
            skipped.append(f"{name} (no ground truth)")
            continue
        checked.append(name)
        if pv <= 0:
            continue  # nothing to regress from
        rel = (cv - pv) / pv
        if rel < -cfg.max_relative_regression - 1e-12:
            failing.append(
                FailingSlice(
                    slice=name, candidate_AP=cv, production_AP=pv, relative_change=rel, images=c.images
                )
            )
    skipped_note = f"; not gated: {', '.join(skipped)}" if skipped else ""
    if failing:
        detail = ", ".join(
            f"{f.slice} {points(f.production_AP)} -> {points(f.candidate_AP)} ({100 * (f.relative_change or 0):+.1f}%)"
            for f in failing
        )
        return GateResult(
            name="critical_slices",
            status="fail",
            observed=f"{len(failing)} of {len(checked)} critical slices regressed",
            requirement=requirement,
            rationale=f"critical slice regression beyond {100 * cfg.max_relative_regression:g}%: {detail}{skipped_note}",
        ), failing
    if not checked:
        return GateResult(
            name="critical_slices",
            status="skipped",
            observed="nothing measurable",
            requirement=requirement,
            rationale=f"no critical slice could be compared{skipped_note}",
        ), []
    worst = min(
        checked,
        key=lambda n: (
            ((cand.slices[n].AP or 0) - (prod.slices[n].AP or 0)) / max(prod.slices[n].AP or 1e-9, 1e-9)
        ),
    )
    return GateResult(
        name="critical_slices",
        status="pass",
        observed=f"0 of {len(checked)} critical slices regressed",
        requirement=requirement,
        rationale=f"every critical slice within bounds ({', '.join(checked)}); closest: {worst}{skipped_note}",
    ), []


def _latency_gate(latency: Latency | None, budget_ms: float | None) -> GateResult:
    req = "no budget" if budget_ms is None else f"p95 <= {budget_ms:g} ms (targets.yaml)"
    if latency is None or latency.p95_ms is None:
        return GateResult(
            name="latency",
            status="fail",
            observed="not measured",
            requirement=req,
            rationale="no p95 latency available for this engine (neither from packaging nor measured)",
        )
    if budget_ms is None:
        return GateResult(
            name="latency",
            status="skipped",
            observed=f"p95 {latency.p95_ms:.2f} ms",
            requirement=req,
            rationale="the target has no latency budget",
        )
    ok = latency.p95_ms <= budget_ms
    return GateResult(
        name="latency",
        status="pass" if ok else "fail",
        observed=f"p95 {latency.p95_ms:.2f} ms ({latency.source})",
        requirement=req,
        rationale=f"p95 {latency.p95_ms:.2f} ms {'within' if ok else 'over'} the {budget_ms:g} ms budget at batch 1",
    )


def _calibration_gate(
    cand: MetricsSnapshot, prod: MetricsSnapshot | None, cfg: CalibrationGate, block_missing: bool
) -> GateResult:
    name = cfg.metric.upper().replace("DECE", "D-ECE")
    cv = cand.ece if cfg.metric == "ece" else cand.dece
    req = f"{name} <= production + {100 * cfg.max_increase:g} pts"
    if prod is None:
        return GateResult(
            name="calibration",
            status="fail" if block_missing else "skipped",
            observed=points(cv),
            requirement=req,
            rationale=f"no production baseline for this cell: {name} not compared",
        )
    pv = prod.ece if cfg.metric == "ece" else prod.dece
    if cv is None or pv is None:
        which = "candidate" if cv is None else "production"
        return GateResult(
            name="calibration",
            status="skipped",
            observed=f"{points(cv)} (production {points(pv)})",
            requirement=req,
            rationale=f"{name} undefined for the {which} (no detections to calibrate)",
        )
    ok = cv <= pv + cfg.max_increase + 1e-12
    return GateResult(
        name="calibration",
        status="pass" if ok else "fail",
        observed=f"{points(cv)} (production {points(pv)})",
        requirement=req,
        rationale=f"{name} {points(pv)} -> {points(cv)} pts ({100 * (cv - pv):+.2f}); {'within' if ok else 'beyond'} the +{100 * cfg.max_increase:g} tolerance",
    )


def evaluate_gates(
    candidate: MetricsSnapshot,
    production: MetricsSnapshot | None,
    latency: Latency | None,
    budget_p95_ms: float | None,
    config: GatesConfig | None = None,
    config_path: Path | str = GATES_FILE,
) -> GateVerdict:
    """The verdict of ``candidate`` vs ``production`` (``None``: no baseline for the cell)."""
    cfg = config or default_gates()
    block = cfg.missing_baseline == "block"
    wm = _weighted_map_gate(candidate, production, cfg.weighted_map, block)
    cs, failing = _critical_slices_gate(candidate, production, cfg.critical_slices, block)
    lat = _latency_gate(latency, budget_p95_ms)
    cal = _calibration_gate(candidate, production, cfg.calibration, block)
    gates = [wm, cs, lat, cal]
    failed = [g for g in gates if g.status == "fail"]
    passed = not failed
    if passed:
        skipped = [g.name for g in gates if g.status == "skipped"]
        rationale = "GREEN: every gate passed" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    else:
        rationale = "RED: " + "; ".join(f"{g.name}: {g.rationale}" for g in failed)
    if production is None:
        rationale += ". No production baseline for this cell."
    try:
        sha = file_sha256(config_path)
    except OSError:
        sha = "unknown"
    return GateVerdict(
        passed=passed,
        verdict="green" if passed else "red",
        gates=gates,
        failing_slices=failing,
        rationale=rationale,
        baseline_available=production is not None,
        gates_version=cfg.version,
        gates_sha256=sha,
    )
