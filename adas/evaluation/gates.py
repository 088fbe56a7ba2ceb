"""Regression gates from ``config/gates.yaml``: a three-valued verdict with its evidence.

Every comparison with production is decided on the *paired interval* of its delta (candidate -
production on the same resampled images, :mod:`adas.evaluation.evidence`), never on the point
estimate alone. Each decision is

* **red** when the whole interval is a regression beyond the tolerance;
* **green** when the interval rules such a regression out;
* **amber** ("insufficient evidence") otherwise, naming the sample size that would likely
  decide it; and for slices thinner than ``min_images``, whatever their interval.

The gates, each ``pass``, ``amber``, ``fail`` or ``skipped`` (with the reason):

1. **weighted mAP**: sum_c w_c AP_c / sum_c w_c; its delta may not regress by more than
   ``max_regression_points`` (or, with ``min_improvement_points``, must improve by that much).
   With no baseline, the absolute floor ``min_without_baseline`` applies to the point value.
2. **critical slices**: no critical slice may lose more than ``max_relative_regression`` of its
   production AP.
3. **safety recall**: recall at the operating point on the safety-critical classes may not drop
   by more than ``max_drop_points``.
4. **latency**: the engine's p95 at batch 1 within the target's budget (an absolute limit on
   one measurement, not a comparison).
5. **calibration**: candidate ECE (or D-ECE) <= production + ``max_increase`` (point estimates).

The verdict is red when any gate fails, else amber when any is amber, else green. Only green
promotes automatically; amber needs a recorded approval that quotes the interval (registry
governance). A red verdict carries a blocking report naming the failing slices: the input of
the data-mining loop (written by :mod:`adas.evaluation.reports`).

Kept as one module because the gates' configuration, the snapshot they read and the rules are
one contract: ``config/gates.yaml`` means what this file says, read top to bottom.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from adas.config_errors import load_yaml_model
from adas.evaluation.config import file_sha256
from adas.evaluation.evidence import DeltaInterval, PairedEvidence
from adas.settings import CONFIG_DIR
from adas.stats import Verdict, decide

GATES_FILE = CONFIG_DIR / "gates.yaml"
Status = Literal["pass", "amber", "fail", "skipped"]
_STATUS: dict[str, Status] = {"green": "pass", "amber": "amber", "red": "fail"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfidenceSettings(_Strict):
    """How every delta's interval is computed: a paired percentile bootstrap over images."""

    level: float = Field(default=0.95, gt=0.5, lt=1)
    resamples: int = Field(default=2000, ge=100, le=100_000)
    seed: int = 0


class WeightedMapGate(_Strict):
    metric: Literal["AP", "AP50"] = "AP"
    class_weights: dict[str, float] = Field(min_length=1)
    max_regression_points: float = Field(default=1.0, ge=0)
    # When set, green needs a proven improvement: the whole interval at or above +this.
    min_improvement_points: float | None = Field(default=None, ge=0)
    min_without_baseline: float = Field(default=0.3, ge=0, le=1)

    @property
    def tolerance(self) -> float:
        """``decide``'s tolerance (fraction): a regression is a delta below ``-tolerance``."""
        if self.min_improvement_points is not None:
            return -self.min_improvement_points / 100.0
        return self.max_regression_points / 100.0

    @property
    def requirement(self) -> str:
        if self.min_improvement_points is not None:
            return f"delta >= +{self.min_improvement_points:g} pts, shown by the whole interval"
        return f"delta >= -{self.max_regression_points:g} pts, shown by the whole interval"

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
    # Per-slice overrides of max_relative_regression (slice name -> fraction).
    slice_tolerances: dict[str, float] = {}
    min_images: int = Field(default=30, ge=1)
    slices: list[str] | None = None

    @field_validator("slice_tolerances")
    @classmethod
    def _fractions(cls, v: dict[str, float]) -> dict[str, float]:
        bad = {k: t for k, t in v.items() if not 0 <= t <= 1}
        if bad:
            raise ValueError(f"slice tolerances are fractions in [0, 1], got {bad}")
        return v

    def relative_tolerance(self, slice_name: str) -> float:
        return self.slice_tolerances.get(slice_name, self.max_relative_regression)


class SafetyRecallGate(_Strict):
    """Recall at each model's operating threshold (IoU 0.5) on the classes whose misses cost most."""

    classes: list[str] = []
    max_drop_points: float = Field(default=2.0, ge=0)


class LatencyGate(_Strict):
    percentile: Literal["p95"] = "p95"


class CalibrationGate(_Strict):
    metric: Literal["ece", "dece"] = "ece"
    max_increase: float = Field(default=0.02, ge=0)


class GatesConfig(_Strict):
    version: int = Field(ge=1)
    confidence: ConfidenceSettings = ConfidenceSettings()
    weighted_map: WeightedMapGate
    critical_slices: CriticalSliceGate = CriticalSliceGate()
    safety_recall: SafetyRecallGate = SafetyRecallGate()
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
    # Why there is no number although the engine runs, e.g. "not measured: host lacks
    # avx512_vnni" (a host without the target's instruction set says nothing about its latency).
    not_measured: str | None = None
    # Why the host was too busy during the measurement to judge a budget ("contended: other work
    # used 48% of the 2 cores' time ..."): a p95 over budget is then amber, not a failure.
    contended: str | None = None


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    status: Status
    observed: str
    requirement: str
    rationale: str
    interval: str | None = None  # the decisive delta, ``point [low, high] (n = ...)`` in points
    n_to_decide: int | None = None  # amber: images that would likely decide it


class DeltaDecision(BaseModel):
    """One gated delta: what was decided, from which interval, against which tolerance."""

    model_config = ConfigDict(frozen=True)

    gate: str
    scope: str  # "all", a slice or a class
    metric: str
    delta: DeltaInterval | None
    tolerance_points: float  # the regression allowed; negative: an improvement required
    verdict: Verdict
    reason: str
    n_to_decide: int | None = None
    higher_is_better: bool = True  # False for calibration error: the limit is an upper one

    @property
    def limit(self) -> str:
        """The bound the whole interval must respect, in points: ``>= -1.00`` or ``<= +2.00``."""
        return f"{'>=' if self.higher_is_better else '<='} {-self.tolerance_points:+.2f}"

    @property
    def quote(self) -> str:
        """What an approval of an amber verdict must quote: scope, metric and interval."""
        shown = self.delta.points() if self.delta is not None else "undefined"
        return f"{self.scope} {self.metric} {shown}"


class FailingSlice(BaseModel):
    model_config = ConfigDict(frozen=True)

    slice: str
    candidate_AP: float | None
    production_AP: float | None
    relative_change: float | None
    images: int


class GateVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool  # green: the only verdict that promotes without a person
    verdict: Verdict
    gates: list[GateResult]
    failing_slices: list[FailingSlice] = []
    decisions: list[DeltaDecision] = []
    rationale: str
    baseline_available: bool
    gates_version: int
    gates_sha256: str
    confidence: str = ""  # how the intervals were computed, in words

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == "fail"]

    @property
    def amber(self) -> list[DeltaDecision]:
        """The undecided deltas (an approval of this verdict must quote each of them)."""
        return [d for d in self.decisions if d.verdict == "amber"]


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


def _decision(
    gate: str,
    scope: str,
    metric: str,
    delta: DeltaInterval | None,
    tolerance: float,
    what: str,
    higher_is_better: bool = True,
) -> DeltaDecision:
    """``decide`` on one stored interval; a missing interval is amber (never silently green).
    ``higher_is_better=False`` (calibration error): a regression is an increase beyond ``tolerance``."""
    sign = 1.0 if higher_is_better else -1.0
    common = {
        "gate": gate,
        "scope": scope,
        "metric": metric,
        "delta": delta,
        "tolerance_points": sign * 100 * tolerance,
        "higher_is_better": higher_is_better,
    }
    if delta is None:
        reason = f"insufficient evidence: {what} has no interval (undefined on these images)"
        return DeltaDecision(**common, verdict="amber", reason=reason)
    d = decide(delta.interval, tolerance, higher_is_better=higher_is_better, what=what)
    # Restate the reason in points, the unit of gates.yaml and of every report.
    shown = delta.points()
    tol = f"{100 * tolerance:.2f} pts" if higher_is_better else f"+{100 * tolerance:.2f} pts"
    regression = "a regression" if higher_is_better else "an increase"
    if d.verdict == "red":
        reason = f"{what} {shown} is {'worse than' if higher_is_better else 'beyond'} the tolerance {tol}"
    elif d.verdict == "green":
        reason = f"{what} {shown} rules out {regression} beyond {tol}"
    else:
        more = f"; about {d.n_to_decide} images would decide it" if d.n_to_decide else ""
        reason = f"insufficient evidence: {what} {shown} straddles the tolerance {tol}{more}"
    return DeltaDecision(**common, verdict=d.verdict, reason=reason, n_to_decide=d.n_to_decide)


def _no_evidence(name: str, requirement: str) -> GateResult:
    return GateResult(
        name=name,
        status="amber",
        observed="no interval",
        requirement=requirement,
        rationale="insufficient evidence: no paired intervals were recorded for this evaluation (re-run it)",
    )


def _weighted_map_gate(
    cand: MetricsSnapshot,
    prod: MetricsSnapshot | None,
    cfg: WeightedMapGate,
    block_missing: bool,
    evidence: PairedEvidence | None,
) -> tuple[GateResult, list[DeltaDecision]]:
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
        ), []
    if per_p is None:
        if block_missing:
            return GateResult(
                name="weighted_map",
                status="fail",
                observed=f"{points(cand_w)}",
                requirement="a production baseline (missing_baseline: block)",
                rationale="no production baseline for this cell and gates.yaml says missing_baseline: block",
            ), []
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
        ), []
    if evidence is None:
        return _no_evidence("weighted_map", cfg.requirement), []
    prod_w = weighted_map(per_p, cfg.class_weights, classes)
    key = "weighted_AP" if metric == "AP" else "weighted_AP50"
    d = _decision(
        "weighted_map",
        "all",
        f"weighted {metric}",
        evidence.delta(key),
        cfg.tolerance,
        f"weighted {metric} delta",
    )
    shown = d.delta.points() if d.delta else "undefined"
    return GateResult(
        name="weighted_map",
        status=_STATUS[d.verdict],
        observed=f"{points(cand_w)} (production {points(prod_w)}, delta {shown})",
        requirement=cfg.requirement,
        rationale=f"weighted {metric} ({weights}) {points(prod_w)} -> {points(cand_w)}: {d.reason}{note}",
        interval=shown,
        n_to_decide=d.n_to_decide,
    ), [d]


def _critical_slices_gate(
    cand: MetricsSnapshot,
    prod: MetricsSnapshot | None,
    cfg: CriticalSliceGate,
    block_missing: bool,
    evidence: PairedEvidence | None,
) -> tuple[GateResult, list[FailingSlice], list[DeltaDecision]]:
    names = cfg.slices if cfg.slices is not None else [n for n, s in cand.slices.items() if s.critical]
    requirement = (
        f"no critical slice below -{100 * cfg.max_relative_regression:g}% of its production {cfg.metric}, "
        f"shown by the whole interval; >= {cfg.min_images} images"
    )
    if not names:
        return (
            GateResult(
                name="critical_slices",
                status="skipped",
                observed="no critical slices",
                requirement=requirement,
                rationale="no slice is marked critical",
            ),
            [],
            [],
        )
    if prod is None:
        return (
            GateResult(
                name="critical_slices",
                status="fail" if block_missing else "skipped",
                observed="no baseline",
                requirement=requirement,
                rationale="no production baseline for this cell: slice regressions cannot be measured",
            ),
            [],
            [],
        )
    if evidence is None:
        return _no_evidence("critical_slices", requirement), [], []
    failing: list[FailingSlice] = []
    decisions: list[DeltaDecision] = []
    skipped: list[str] = []
    for name in names:
        c = cand.slices.get(name)
        p = prod.slices.get(name)
        if c is None:
            skipped.append(f"{name} (not evaluated)")
            continue
        cv = c.AP if cfg.metric == "AP" else c.AP50
        pv = None if p is None else (p.AP if cfg.metric == "AP" else p.AP50)
        if cv is None or pv is None:
            skipped.append(f"{name} (no ground truth)")
            continue
        tolerance = cfg.relative_tolerance(name) * pv
        d = _decision(
            "critical_slices",
            name,
            cfg.metric,
            evidence.delta(cfg.metric, name),
            tolerance,
            f"{name} {cfg.metric} delta",
        )
        if c.images < cfg.min_images and d.verdict == "green":
            # Too few images to trust an interval that looks decided: amber, never silently green.
            d = d.model_copy(
                update={
                    "verdict": "amber",
                    "reason": f"insufficient support: {name} has {c.images} images < {cfg.min_images} "
                    f"(delta {d.delta.points() if d.delta else 'undefined'})",
                    "n_to_decide": cfg.min_images,
                }
            )
        decisions.append(d)
        if d.verdict == "red":
            failing.append(
                FailingSlice(
                    slice=name,
                    candidate_AP=cv,
                    production_AP=pv,
                    relative_change=(cv - pv) / pv if pv > 0 else None,
                    images=c.images,
                )
            )
    skipped_note = f"; not gated: {', '.join(skipped)}" if skipped else ""
    if not decisions:
        return (
            GateResult(
                name="critical_slices",
                status="skipped",
                observed="nothing measurable",
                requirement=requirement,
                rationale=f"no critical slice could be compared{skipped_note}",
            ),
            [],
            [],
        )
    red = [d for d in decisions if d.verdict == "red"]
    amber = [d for d in decisions if d.verdict == "amber"]
    worst = min(decisions, key=lambda d: d.delta.low if d.delta else -1.0)
    if red:
        status: Status = "fail"
        detail = "; ".join(d.reason for d in red)
        rationale = f"critical slice regression beyond {100 * cfg.max_relative_regression:g}%: {detail}"
    elif amber:
        status = "amber"
        rationale = "; ".join(d.reason for d in amber)
    else:
        status = "pass"
        rationale = (
            f"every critical slice rules out a regression ({', '.join(d.scope for d in decisions)}); "
            f"closest: {worst.reason}"
        )
    return (
        GateResult(
            name="critical_slices",
            status=status,
            observed=f"{len(red)} red, {len(amber)} amber of {len(decisions)} critical slices",
            requirement=requirement,
            rationale=rationale + skipped_note,
            interval=f"{worst.scope}: {worst.delta.points()}" if worst.delta else None,
            n_to_decide=max((d.n_to_decide or 0 for d in amber), default=0) or None,
        ),
        failing,
        decisions,
    )


def _safety_recall_gate(
    cand: MetricsSnapshot,
    prod: MetricsSnapshot | None,
    cfg: SafetyRecallGate,
    evidence: PairedEvidence | None,
) -> tuple[GateResult, list[DeltaDecision]]:
    requirement = f"recall at the operating point may not drop by more than {cfg.max_drop_points:g} pts"
    if not cfg.classes:
        return GateResult(
            name="safety_recall",
            status="skipped",
            observed="no classes",
            requirement=requirement,
            rationale="no safety-critical class is configured",
        ), []
    if prod is None:
        return GateResult(
            name="safety_recall",
            status="skipped",
            observed="no baseline",
            requirement=requirement,
            rationale="no production baseline for this cell: recall drops cannot be measured",
        ), []
    if evidence is None:
        return _no_evidence("safety_recall", requirement), []
    decisions = [
        _decision(
            "safety_recall",
            name,
            f"recall/{name}",
            evidence.delta(f"recall/{name}"),
            cfg.max_drop_points / 100.0,
            f"{name} recall delta",
        )
        for name in cfg.classes
    ]
    verdicts = {d.verdict for d in decisions}
    status: Status = "fail" if "red" in verdicts else ("amber" if "amber" in verdicts else "pass")
    worst = min(decisions, key=lambda d: d.delta.low if d.delta else -1.0)
    return GateResult(
        name="safety_recall",
        status=status,
        observed=", ".join(f"{d.scope} {d.delta.points() if d.delta else 'undefined'}" for d in decisions),
        requirement=requirement,
        rationale="; ".join(d.reason for d in decisions),
        interval=f"{worst.scope}: {worst.delta.points()}" if worst.delta else None,
        n_to_decide=max((d.n_to_decide or 0 for d in decisions if d.verdict == "amber"), default=0) or None,
    ), decisions


def _latency_gate(latency: Latency | None, budget_ms: float | None) -> GateResult:
    req = "no budget" if budget_ms is None else f"p95 <= {budget_ms:g} ms (targets.yaml)"
    if latency is not None and latency.not_measured:
        # Not a pass, and not the candidate's fault: amber until a host with the target's
        # instruction set measures it.
        return GateResult(
            name="latency",
            status="amber",
            observed=latency.not_measured,
            requirement=req,
            rationale=f"{latency.not_measured}: measure on a node with the target's instruction set",
        )
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
    if not ok and latency.contended:
        # Contention only slows an engine down: a pass under load stands, a miss does not judge it.
        return GateResult(
            name="latency",
            status="amber",
            observed=f"p95 {latency.p95_ms:.2f} ms ({latency.source}), {latency.contended}",
            requirement=req,
            rationale=f"p95 {latency.p95_ms:.2f} ms over the {budget_ms:g} ms budget while the host was "
            f"{latency.contended.removeprefix('contended: ')}: re-measure on a quiet node",
        )
    return GateResult(
        name="latency",
        status="pass" if ok else "fail",
        observed=f"p95 {latency.p95_ms:.2f} ms ({latency.source})",
        requirement=req,
        rationale=f"p95 {latency.p95_ms:.2f} ms {'within' if ok else 'over'} the {budget_ms:g} ms budget at batch 1",
    )


def _calibration_gate(
    cand: MetricsSnapshot,
    prod: MetricsSnapshot | None,
    cfg: CalibrationGate,
    block_missing: bool,
    evidence: PairedEvidence | None,
) -> tuple[GateResult, list[DeltaDecision]]:
    name = cfg.metric.upper().replace("DECE", "D-ECE")
    cv = cand.ece if cfg.metric == "ece" else cand.dece
    req = f"{name} delta <= +{100 * cfg.max_increase:g} pts, shown by the whole interval"
    if prod is None:
        return GateResult(
            name="calibration",
            status="fail" if block_missing else "skipped",
            observed=points(cv),
            requirement=req,
            rationale=f"no production baseline for this cell: {name} not compared",
        ), []
    pv = prod.ece if cfg.metric == "ece" else prod.dece
    if cv is None or pv is None:
        which = "candidate" if cv is None else "production"
        return GateResult(
            name="calibration",
            status="skipped",
            observed=f"{points(cv)} (production {points(pv)})",
            requirement=req,
            rationale=f"{name} undefined for the {which} (no detections to calibrate)",
        ), []
    if evidence is None:
        return _no_evidence("calibration", req), []
    delta = evidence.calibration if evidence.calibration_metric == cfg.metric else None
    d = _decision(
        "calibration", "all", name, delta, cfg.max_increase, f"{name} delta", higher_is_better=False
    )
    return GateResult(
        name="calibration",
        status=_STATUS[d.verdict],
        observed=f"{points(cv)} (production {points(pv)})",
        requirement=req,
        rationale=f"{name} {points(pv)} -> {points(cv)}: {d.reason}",
        interval=d.delta.points() if d.delta else None,
        n_to_decide=d.n_to_decide,
    ), [d]


def evaluate_gates(
    candidate: MetricsSnapshot,
    production: MetricsSnapshot | None,
    latency: Latency | None,
    budget_p95_ms: float | None,
    config: GatesConfig | None = None,
    config_path: Path | str = GATES_FILE,
    evidence: PairedEvidence | None = None,
) -> GateVerdict:
    """The verdict of ``candidate`` vs ``production`` (``None``: no baseline for the cell),
    decided on the paired intervals of ``evidence`` (:func:`adas.evaluation.evidence.paired_evidence`)."""
    cfg = config or default_gates()
    block = cfg.missing_baseline == "block"
    wm, wm_d = _weighted_map_gate(candidate, production, cfg.weighted_map, block, evidence)
    cs, failing, cs_d = _critical_slices_gate(candidate, production, cfg.critical_slices, block, evidence)
    sr, sr_d = _safety_recall_gate(candidate, production, cfg.safety_recall, evidence)
    lat = _latency_gate(latency, budget_p95_ms)
    cal, cal_d = _calibration_gate(candidate, production, cfg.calibration, block, evidence)
    gates = [wm, cs, sr, lat, cal]
    failed = [g for g in gates if g.status == "fail"]
    amber = [g for g in gates if g.status == "amber"]
    verdict: Verdict = "red" if failed else ("amber" if amber else "green")
    if verdict == "green":
        skipped = [g.name for g in gates if g.status == "skipped"]
        rationale = "GREEN: every gate passed" + (f" (skipped: {', '.join(skipped)})" if skipped else "")
    elif verdict == "red":
        rationale = "RED: " + "; ".join(f"{g.name}: {g.rationale}" for g in failed)
    else:
        rationale = "AMBER (insufficient evidence): " + "; ".join(f"{g.name}: {g.rationale}" for g in amber)
    if production is None:
        rationale += ". No production baseline for this cell."
    try:
        sha = file_sha256(config_path)
    except OSError:
        sha = "unknown"
    how = (
        ""
        if evidence is None
        else f"{evidence.method}: {evidence.resamples} resamples, seed {evidence.seed}, "
        f"{100 * evidence.confidence:g}% intervals, n = {evidence.n_images} images"
    )
    return GateVerdict(
        passed=verdict == "green",
        verdict=verdict,
        gates=gates,
        failing_slices=failing,
        decisions=[*wm_d, *cs_d, *sr_d, *cal_d],
        rationale=rationale,
        baseline_available=production is not None,
        gates_version=cfg.version,
        gates_sha256=sha,
        confidence=how,
    )
