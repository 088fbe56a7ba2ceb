"""The simulation gate: absolute limits per scenario category and paired comparisons with production.

Criteria live in ``config/simulation.yaml`` (``gate``). Two kinds of check:

* **absolute** (NCAP-style zero collisions in clear weather, off-road and blocked limits): any
  breach is red, whatever production does: a collision in an NCAP scene is evidence, not noise.
  The Clopper-Pearson interval of the candidate's rate is reported beside the count.
* **comparisons with production**, paired on the shared run ids and seeds and three-valued
  (``adas.stats.decide``: red when the interval is wholly worse than the tolerance, green when
  it rules that out, amber "insufficient evidence" otherwise, with the runs that would decide):

  - collision and failure (collision, off road or blocked) **rates**: exact McNemar test on the
    discordant runs and Newcombe's paired interval of the rate difference, against a tolerance in
    rate units (0.05: five percentage points);
  - near misses (all, and with vulnerable road users), driving score and p95 |jerk|: percentile
    bootstrap of the mean per-run difference (candidate - production on the same run);
  - minimum time to collision: quantiles of the per-run differences where both are defined, and
    a bootstrap interval of their median, against a tolerance in seconds.

  Pooled over all runs the comparisons decide; per category (2 to 8 runs in the demo sweep) they
  can only fail (see ``config.CategoryCriteria``).

The verdict is red if any check fails, amber if any is undecided, green otherwise; ``green`` is
kept for readers of the boolean. A sequential sweep (``sequential``) hands in the confidence of
its last look for the rate comparisons.

The checks count events that need persistent perception failures to happen (a collision
needs an object missed for seconds); frame-independent misses are absorbed by the tracker and
the 5 Hz controller, so they alone cannot turn the gate red.

Domain code: no dagster import.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import Any, Final, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, model_validator

from adas.simulation.config import GateConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.metrics import EpisodeMetrics, GroupSummary, RunRecord, summarize, summarize_by_category
from adas.simulation.sequential import SequentialRecord
from adas.stats import (
    DEFAULT_CONFIDENCE,
    Interval,
    PairedBinary,
    Verdict,
    bootstrap_statistic,
    clopper_pearson_interval,
    decide,
    paired_binary,
    weighted_mean,
)

CheckStatus = Literal["pass", "amber", "fail", "skipped"]
STATUS_OF: Final[dict[Verdict, CheckStatus]] = {"green": "pass", "amber": "amber", "red": "fail"}
# The pooled rate comparisons the sequential rule adds runs for.
SEQUENTIAL_CHECKS: Final[frozenset[str]] = frozenset({"collision_rate_increase", "failure_rate_increase"})
# Comfort: a small absolute allowance on the p95 |jerk| keeps near-zero production values sane.
JERK_FLOOR_MPS3: Final[float] = 0.5
# A category guard that is not red: what its detail says.
NOT_DECISIVE: Final[str] = "not decisive on {n} runs of this category alone (the pooled check decides)"
# The amber estimate of the runs that would decide a rate comparison stops looking here.
MAX_RUNS_TO_DECIDE: Final[int] = 100_000


class GateCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scope: str  # a category, or "all"
    status: CheckStatus
    passed: bool  # status == "pass" (kept for readers of the boolean and stored refs)
    candidate: float | None
    production: float | None
    limit: str
    detail: str = ""
    interval: str | None = None  # ``point [low, high] (n = ...)`` of the delta (or of the rate)
    n_to_decide: int | None = None  # amber: about this many runs would decide it

    @model_validator(mode="before")
    @classmethod
    def _status_from_passed(cls, data: Any) -> Any:
        """Refs stored before the three-valued gate carry only ``passed``; new code may give only ``status``."""
        if isinstance(data, dict):
            if "status" not in data and "passed" in data:
                data = {**data, "status": "pass" if data["passed"] else "fail"}
            elif "passed" not in data and "status" in data:
                data = {**data, "passed": data["status"] == "pass"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> GateCheck:
        if self.passed != (self.status == "pass"):
            raise ValueError(f"passed={self.passed} contradicts status {self.status!r}")
        return self


def overall_verdict(checks: Sequence[GateCheck]) -> Verdict:
    """Red if any check fails, else amber if any is undecided, else green (skipped checks are neutral)."""
    statuses = {c.status for c in checks}
    return "red" if "fail" in statuses else "amber" if "amber" in statuses else "green"


class ScenarioOutcome(BaseModel):
    """One scene over its runs: what the candidate did there, beside production on the same runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario: str  # a library scenario's id, else the category (its shipped file, or traffic)
    source: Literal["library", "shipped", "traffic"]
    runs: int
    outcome: Literal["pass", "fail"]  # fail: the candidate collided, left the road or got stuck
    candidate_failures: int
    production_failures: int
    candidate_collisions: int
    min_ttc_s: float | None  # the candidate's lowest over the runs
    min_gap_m: float | None
    hard_brakes: int
    max_p95_jerk_mps3: float
    # The candidate's worst time to first detection of a vehicle ahead in the path (None: none was),
    # and its runs with such a vehicle never detected (then the time is a lower bound).
    max_time_to_first_detection_s: float | None = None
    runs_with_undetected_lead: int = 0


class SimVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    green: bool  # verdict == "green"
    verdict: Verdict
    checks: list[GateCheck]
    rationale: str
    candidate: dict[str, GroupSummary]
    production: dict[str, GroupSummary]
    runs: int = 0  # paired runs the verdict was decided on
    sequential: SequentialRecord | None = None
    scenarios: list[ScenarioOutcome] = []

    @property
    def status(self) -> Verdict:
        return self.verdict

    @property
    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def amber_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if c.status == "amber"]

    @property
    def rates(self) -> Verdict:
        """The worst of the pooled rate comparisons (what the sequential rule looks at)."""
        return overall_verdict([c for c in self.checks if c.scope == "all" and c.name in SEQUENTIAL_CHECKS])


Pair = tuple[RunRecord, RunRecord]  # (candidate, production) on one run


def _check(
    name: str,
    scope: str,
    cand: float | None,
    prod: float | None,
    limit: str,
    status: CheckStatus,
    detail: str = "",
    interval: str | None = None,
    n_to_decide: int | None = None,
) -> GateCheck:
    return GateCheck(
        name=name,
        scope=scope,
        status=status,
        passed=status == "pass",
        candidate=cand,
        production=prod,
        limit=limit,
        detail=detail,
        interval=interval,
        n_to_decide=n_to_decide,
    )


def _failing_runs(records: Sequence[RunRecord], failed: Callable[[EpisodeMetrics], bool]) -> str:
    runs = [r for r in records if failed(r.metrics)]
    parts = []
    for r in runs[:6]:
        s = r.spec
        what = f"{s.actor_type} " if s.actor_type else ""
        with_ = (
            f" with {r.metrics.collision_with}" if r.metrics.collisions and r.metrics.collision_with else ""
        )
        parts.append(f"{s.run_id} ({what}{s.condition}, {s.ego_speed_mps:g} m/s{with_})")
    more = f" and {len(runs) - 6} more" if len(runs) > 6 else ""
    return ", ".join(parts) + more


def _collided(m: EpisodeMetrics) -> bool:
    return m.collisions > 0


def _failed(m: EpisodeMetrics) -> bool:
    return m.failed


def _rate_text(successes: int, n: int) -> str:
    """The Clopper-Pearson interval of a rate, in percent."""
    return clopper_pearson_interval(successes, n).format(scale=100, digits=1, unit="%")


def _judgement(status: CheckStatus, what: str, interval: str, tolerance: str, n_to_decide: int | None) -> str:
    if status == "fail":
        return f"{what} {interval} is worse than the tolerance {tolerance}"
    if status == "amber":
        more = f"; about {n_to_decide} runs would decide it" if n_to_decide else ""
        return f"insufficient evidence: {what} {interval} straddles the tolerance {tolerance}{more}"
    return f"{what} {interval} rules out a regression beyond {tolerance}"


def paired_rate_runs_to_decide(
    paired: PairedBinary, tolerance: float, confidence: float = DEFAULT_CONFIDENCE
) -> int | None:
    """Paired runs that would decide an amber rate comparison if the observed rates held.

    The observed table is scaled to larger samples and Newcombe's interval recomputed: at zero
    counts the Wilson bounds shrink as 1/n, not 1/sqrt(n), so the generic estimate of
    ``adas.stats.samples_to_decide`` would ask for several times too many runs (183 instead of
    73 for 0/24 vs 0/24 at five points). None when the observed difference sits on the tolerance.
    """
    n = paired.n
    if n <= 0 or abs((paired.candidate_only - paired.production_only) / n - tolerance) < 1e-12:
        return None

    def decided(m: int) -> bool:
        f = m / n
        scaled = PairedBinary(
            n=m,
            candidate_only=round(paired.candidate_only * f),
            production_only=round(paired.production_only * f),
            both=round(paired.both * f),
        )
        return (
            decide(scaled.rate_difference(confidence), tolerance, higher_is_better=False).verdict != "amber"
        )

    hi = n
    while not decided(hi):
        if hi > MAX_RUNS_TO_DECIDE:
            return None
        hi *= 2
    lo = max(n, hi // 2)
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi


def _rate_check(
    name: str,
    scope: str,
    pairs: Sequence[Pair],
    outcome: Callable[[EpisodeMetrics], bool],
    tolerance: float,
    confidence: float,
    *,
    what: str,
    guard: bool = False,
    where: str = "",
) -> GateCheck:
    """Paired rate comparison on shared seeds: McNemar on the discordant runs, Newcombe's interval."""
    tol = f"+{tolerance * 100:g} pp"
    conf = f"{confidence:.1%}" if abs(confidence - DEFAULT_CONFIDENCE) > 1e-9 else "95%"
    limit = (
        f"red only if surely > production {tol}{where}"
        if guard
        else f"<= production {tol}{where} ({conf} Newcombe interval)"
    )
    if not pairs:
        return _check(name, scope, None, None, limit, "skipped", "no paired runs")
    cand = [outcome(c.metrics) for c, _ in pairs]
    prod = [outcome(p.metrics) for _, p in pairs]
    paired = paired_binary(cand, prod)
    diff = paired.rate_difference(confidence)
    status = STATUS_OF[decide(diff, tolerance, higher_is_better=False).verdict]
    if guard and status == "amber":
        status = "pass"  # a category guard only fails (config.CategoryCriteria); the pooled check decides
    n_to_decide = paired_rate_runs_to_decide(paired, tolerance, confidence) if status == "amber" else None
    interval = diff.format(scale=100, digits=1, unit=" pp")
    n, k_c, k_p = paired.n, sum(cand), sum(prod)
    if guard and status == "pass":
        judgement = NOT_DECISIVE.format(n=n)
    else:
        judgement = _judgement(status, f"{what} rate difference", interval, tol, n_to_decide)
    detail = (
        f"{judgement}. Candidate {k_c}/{n} = {_rate_text(k_c, n)}, production {k_p}/{n} = "
        f"{_rate_text(k_p, n)} (Clopper-Pearson); exact McNemar p = {paired.p_value:.3g} on "
        f"{paired.candidate_only + paired.production_only} discordant runs (candidate only "
        f"{paired.candidate_only}, production only {paired.production_only})"
    )
    only_cand = [c for (c, p) in pairs if outcome(c.metrics) and not outcome(p.metrics)]
    if only_cand and status != "pass":
        detail += f"; only the candidate: {_failing_runs(only_cand, outcome)}"
    return _check(
        name, scope, round(k_c / n, 4), round(k_p / n, 4), limit, status, detail, interval, n_to_decide
    )


def weighted_lower_median(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The (lower) median of ``x`` under each row of bootstrap multiplicities ``w[R, n]``."""
    order = np.argsort(x, kind="stable")
    cum = np.cumsum(w[:, order], axis=1)
    idx = np.argmax(cum >= cum[:, -1:] / 2, axis=1)
    return x[order][idx]


def _seed(name: str, scope: str) -> int:
    """A fixed bootstrap seed per check: the same runs give the same verdict."""
    return zlib.crc32(f"{name}/{scope}".encode())


def _paired_difference_check(
    name: str,
    scope: str,
    cand: Sequence[float],
    prod: Sequence[float],
    tolerance: float,
    cfg: GateConfig,
    *,
    higher_is_better: bool,
    what: str,
    unit: str = "",
    digits: int = 2,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray] = weighted_mean,
    guard: bool = False,
    gated: bool = True,
    extra: str = "",
) -> GateCheck:
    """Per-run differences (candidate - production on the same run), bootstrapped and decided."""
    sign = "-" if higher_is_better else "+"
    tol = f"{sign}{tolerance:.{digits}f}{unit}"
    limit = f"red only if surely beyond {tol}" if guard else f"{what} within {tol}"
    if not gated:
        limit = "reported, not gated"
    if not cand:
        return _check(name, scope, None, None, limit, "skipped", f"no paired runs with {what}")
    c, p = np.asarray(cand, float), np.asarray(prod, float)
    interval: Interval = bootstrap_statistic(
        c - p, statistic, n_resamples=cfg.bootstrap_resamples, seed=_seed(name, scope)
    )
    decision = decide(interval, tolerance, higher_is_better=higher_is_better, what=what)
    status = STATUS_OF[decision.verdict]
    if guard and status == "amber":
        status = "pass"  # a category guard only fails (config.CategoryCriteria); the pooled check decides
    if not gated:
        status = "skipped"
    text = interval.format(digits=digits, unit=unit)
    n_to_decide = decision.n_to_decide if status == "amber" else None
    if not gated:
        judgement = f"{what} {text} (not gated)"
    elif guard and status == "pass":
        judgement = NOT_DECISIVE.format(n=len(c))
    else:
        judgement = _judgement(status, what, text, tol, n_to_decide)
    return _check(
        name,
        scope,
        round(float(statistic(c, np.ones((1, len(c))))[0]), 4),
        round(float(statistic(p, np.ones((1, len(p))))[0]), 4),
        limit,
        status,
        judgement + (f". {extra}" if extra else ""),
        text,
        n_to_decide,
    )


def _absolute_check(
    name: str,
    scope: str,
    records: Sequence[RunRecord],
    production: Sequence[RunRecord],
    failed: Callable[[EpisodeMetrics], bool],
    count: Callable[[EpisodeMetrics], int],
    limit: int,
    where: str = "",
) -> GateCheck:
    """Deterministic: any breach is red. The interval is the candidate's rate of such runs."""
    ids = {r.spec.run_id for r in records}
    n_c = sum(count(r.metrics) for r in records)
    n_p = sum(count(r.metrics) for r in production if r.spec.run_id in ids)
    k = sum(1 for r in records if failed(r.metrics))
    status: CheckStatus = "pass" if n_c <= limit else "fail"
    detail = f"candidate runs with one: {k}/{len(records)} = {_rate_text(k, len(records))} (Clopper-Pearson)"
    if status == "fail":
        detail = f"{_failing_runs(records, failed)}; {detail}"
    return _check(name, scope, n_c, n_p, f"<= {limit}{where}", status, detail, _rate_text(k, len(records)))


def _min_ttc_check(pairs: Sequence[Pair], cfg: GateConfig) -> GateCheck:
    """Median paired difference of the minimum TTC (capped: beyond the cap there is no conflict)."""
    both = [
        (min(c.metrics.min_ttc_s, cfg.min_ttc_cap_s), min(p.metrics.min_ttc_s, cfg.min_ttc_cap_s))
        for c, p in pairs
        if c.metrics.min_ttc_s is not None and p.metrics.min_ttc_s is not None
    ]
    extra = ""
    if both:
        diffs = np.array([c - p for c, p in both])
        q = np.quantile(diffs, [0.05, 0.25, 0.5, 0.75, 0.95])
        extra = (
            f"Paired min-TTC differences (candidate - production, capped at {cfg.min_ttc_cap_s:g} s) on "
            f"{len(both)} of {len(pairs)} runs (the rest have no closing lead for one model): quantiles 5/25/50/75/95 % "
            + " / ".join(f"{v:+.2f}" for v in q)
            + f" s, mean {diffs.mean():+.2f} s"
        )
    return _paired_difference_check(
        "min_ttc_drop",
        "all",
        [c for c, _ in both],
        [p for _, p in both],
        cfg.max_min_ttc_drop_s or 0.0,
        cfg,
        higher_is_better=True,
        what="median min-TTC difference",
        unit=" s",
        statistic=weighted_lower_median,
        gated=cfg.max_min_ttc_drop_s is not None,
        extra=extra,
    )


def _category_checks(
    cat: str, pairs: Sequence[Pair], production: Sequence[RunRecord], cfg: GateConfig, confidence: float
) -> list[GateCheck]:
    crit = cfg.categories[cat]  # type: ignore[index]
    c_recs = [c for c, _ in pairs]
    checks: list[GateCheck] = []
    absolute = crit.absolute_conditions
    in_abs = [r for r in c_recs if absolute is None or r.spec.condition in absolute]
    where = f" in {', '.join(absolute)}" if absolute is not None else ""
    if crit.max_collisions is not None and in_abs:
        checks.append(
            _absolute_check(
                "collisions",
                cat,
                in_abs,
                production,
                _collided,
                lambda m: m.collisions,
                crit.max_collisions,
                where,
            )
        )
    if crit.max_collision_rate_increase is not None:
        # With absolute conditions, the comparison with production covers the other conditions.
        covered = absolute is not None and crit.max_collisions is not None
        rel = [(c, p) for c, p in pairs if not covered or c.spec.condition not in (absolute or [])]
        if rel:
            checks.append(
                _rate_check(
                    "collision_rate_increase",
                    cat,
                    rel,
                    _collided,
                    crit.max_collision_rate_increase,
                    confidence,
                    what="collision",
                    guard=True,
                    where=f" outside {', '.join(absolute or [])}" if covered else "",
                )
            )
    if crit.max_off_road is not None:
        checks.append(
            _absolute_check(
                "off_road",
                cat,
                c_recs,
                production,
                lambda m: m.off_road_events > 0,
                lambda m: m.off_road_events,
                crit.max_off_road,
            )
        )
    if crit.max_blocked is not None:
        checks.append(
            _absolute_check(
                "agent_blocked",
                cat,
                c_recs,
                production,
                lambda m: m.agent_blocked_events > 0,
                lambda m: m.agent_blocked_events,
                crit.max_blocked,
            )
        )
    if crit.max_near_miss_increase_per_run is not None:
        checks.append(
            _paired_difference_check(
                "near_miss_increase",
                cat,
                [c.metrics.near_misses for c, _ in pairs],
                [p.metrics.near_misses for _, p in pairs],
                crit.max_near_miss_increase_per_run,
                cfg,
                higher_is_better=False,
                what="near misses per run",
                guard=True,
            )
        )
    if crit.max_driving_score_drop is not None:
        checks.append(
            _paired_difference_check(
                "driving_score_drop",
                cat,
                [c.metrics.driving_score for c, _ in pairs],
                [p.metrics.driving_score for _, p in pairs],
                crit.max_driving_score_drop,
                cfg,
                higher_is_better=True,
                what="mean driving-score difference",
                digits=3,
                guard=True,
            )
        )
    return checks


def evaluate_gate(
    candidate: Sequence[RunRecord],
    production: Sequence[RunRecord],
    cfg: GateConfig,
    *,
    rate_confidence: float = DEFAULT_CONFIDENCE,
    sequential: SequentialRecord | None = None,
) -> SimVerdict:
    """Every check, the verdict and its rationale (naming each failing or undecided check and run).

    ``rate_confidence``: confidence of the rate intervals (a sequential sweep's last look gives a
    repeated confidence interval's); ``sequential``: how the runs were added, for the rationale.
    """
    checks: list[GateCheck] = []
    cand_ids = {r.spec.run_id: r.spec for r in candidate}
    prod_ids = {r.spec.run_id: r.spec for r in production}
    same = cand_ids == prod_ids
    checks.append(
        _check(
            "identical_runs",
            "all",
            len(cand_ids),
            len(prod_ids),
            "same run ids, parameters and seeds",
            "pass" if same else "fail",
            "" if same else "candidate and production were not run on the same specs",
        )
    )
    checks.append(
        _check(
            "min_runs",
            "all",
            len(candidate),
            None,
            f">= {cfg.min_runs}",
            "pass" if len(candidate) >= cfg.min_runs else "fail",
        )
    )
    # Pairs on the shared run ids (the same seeds): every comparison below is paired.
    prod_by_id = {r.spec.run_id: r for r in production}
    pairs: list[Pair] = [(c, prod_by_id[c.spec.run_id]) for c in candidate if c.spec.run_id in prod_by_id]
    for cat in cfg.categories:
        cat_pairs = [(c, p) for c, p in pairs if c.spec.category == cat]
        if cat_pairs:
            checks += _category_checks(cat, cat_pairs, production, cfg, rate_confidence)
    checks.append(
        _rate_check(
            "collision_rate_increase",
            "all",
            pairs,
            _collided,
            cfg.max_collision_rate_increase,
            rate_confidence,
            what="collision",
        )
    )
    checks.append(
        _rate_check(
            "failure_rate_increase",
            "all",
            pairs,
            _failed,
            cfg.max_failure_rate_increase,
            rate_confidence,
            what="failure (collision, off road or blocked)",
        )
    )
    cm = [c.metrics for c, _ in pairs]
    pm = [p.metrics for _, p in pairs]
    checks.append(
        _paired_difference_check(
            "near_miss_increase",
            "all",
            [m.near_misses for m in cm],
            [m.near_misses for m in pm],
            cfg.max_near_miss_increase_per_run,
            cfg,
            higher_is_better=False,
            what="near misses per run",
        )
    )
    checks.append(
        _paired_difference_check(
            "vru_near_miss_increase",
            "all",
            [m.vru_near_misses for m in cm],
            [m.vru_near_misses for m in pm],
            cfg.max_vru_near_miss_increase_per_run,
            cfg,
            higher_is_better=False,
            what="near misses with motorcycles per run",
        )
    )
    checks.append(_min_ttc_check(pairs, cfg))
    checks.append(
        _paired_difference_check(
            "driving_score_drop",
            "all",
            [m.driving_score for m in cm],
            [m.driving_score for m in pm],
            cfg.max_driving_score_drop,
            cfg,
            higher_is_better=True,
            what="mean driving-score difference",
            digits=3,
        )
    )
    # Comfort: a bounded regression of each run's p95 |jerk|, relative to production's mean.
    prod_jerk = float(np.mean([m.p95_abs_jerk_mps3 for m in pm])) if pm else 0.0
    checks.append(
        _paired_difference_check(
            "comfort_p95_jerk",
            "all",
            [m.p95_abs_jerk_mps3 for m in cm],
            [m.p95_abs_jerk_mps3 for m in pm],
            prod_jerk * cfg.max_p95_jerk_increase_pct / 100 + JERK_FLOOR_MPS3,
            cfg,
            higher_is_better=False,
            what="mean p95-jerk difference",
            unit=" m/s³",
            extra=f"tolerance: {cfg.max_p95_jerk_increase_pct:g} % of production's mean {prod_jerk:.2f} m/s³ "
            f"+ {JERK_FLOOR_MPS3:g} m/s³",
        )
    )
    outcomes = scenario_outcomes(pairs)
    checks += _library_checks(outcomes)
    verdict = overall_verdict(checks)
    c_cat, p_cat = summarize_by_category(candidate), summarize_by_category(production)
    c_all, p_all = summarize(candidate), summarize(production)
    return SimVerdict(
        green=verdict == "green",
        verdict=verdict,
        checks=checks,
        rationale=rationale_markdown(
            verdict,
            checks,
            c_all,
            p_all,
            _collision_notes(candidate, production),
            len(pairs),
            sequential,
            outcomes,
        ),
        candidate={**c_cat, "all": c_all},
        production={**p_cat, "all": p_all},
        runs=len(pairs),
        sequential=sequential,
        scenarios=outcomes,
    )


def _scene_of(spec: EpisodeSpec) -> tuple[str, Literal["library", "shipped", "traffic"]]:
    if spec.source.startswith("library:"):
        return spec.source.removeprefix("library:"), "library"
    return spec.category, "shipped" if spec.xosc is not None else "traffic"


def scenario_outcomes(pairs: Sequence[Pair]) -> list[ScenarioOutcome]:
    """Per scene (each library scenario over its sweep, each category), in first-run order."""
    groups: dict[tuple[str, str], list[Pair]] = {}
    for c, p in pairs:
        groups.setdefault(_scene_of(c.spec), []).append((c, p))
    out = []
    for (scene, source), group in groups.items():
        cm = [c.metrics for c, _ in group]
        ttcs = [m.min_ttc_s for m in cm if m.min_ttc_s is not None]
        gaps = [m.min_gap_m for m in cm if m.min_gap_m is not None]
        ttfds = [m.time_to_first_detection_s for m in cm if m.time_to_first_detection_s is not None]
        failures = sum(m.failed for m in cm)
        out.append(
            ScenarioOutcome(
                scenario=scene,
                source=source,  # type: ignore[arg-type]
                runs=len(group),
                outcome="fail" if failures else "pass",
                candidate_failures=failures,
                production_failures=sum(p.metrics.failed for _, p in group),
                candidate_collisions=sum(m.collisions for m in cm),
                min_ttc_s=min(ttcs) if ttcs else None,
                min_gap_m=min(gaps) if gaps else None,
                hard_brakes=sum(m.hard_brake_events for m in cm),
                max_p95_jerk_mps3=max(m.p95_abs_jerk_mps3 for m in cm),
                max_time_to_first_detection_s=max(ttfds) if ttfds else None,
                runs_with_undetected_lead=sum(m.undetected_leads > 0 for m in cm),
            )
        )
    return out


def _library_checks(outcomes: Sequence[ScenarioOutcome]) -> list[GateCheck]:
    """A scenario the replay found (the candidate diverged there) that the candidate still fails in
    closed loop, named: red when production gets through more of its runs (the candidate is worse
    there), amber when production fails it as often (the scenario is not evidence against the
    candidate, and the reason it was extracted is still not fixed: look at the clip)."""
    return [_library_check(o) for o in outcomes if o.source == "library"]


def _library_check(o: ScenarioOutcome) -> GateCheck:
    cand, prod = o.candidate_failures, o.production_failures
    status: CheckStatus = "pass" if not cand else ("amber" if prod >= cand else "fail")
    detail = ""
    if cand:
        detail = f"the candidate fails {cand} of {o.runs} runs of extracted scenario {o.scenario} (production {prod})"
        if status == "amber":
            detail += ": production fails it as often, so it does not tell the two apart"
    return _check(
        "library_scenario_still_fails",
        o.scenario,
        float(cand),
        float(prod),
        "0 failing runs of an extracted scenario (red where production fails fewer)",
        status,
        detail,
        # What an approval accepting the amber quotes (a count has no interval).
        interval=f"{cand} vs {prod} failing of {o.runs} runs" if cand else None,
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _first_detection_cell(o: ScenarioOutcome) -> str:
    """The worst time to first detection; "≥" with the runs when a vehicle ahead was never detected."""
    if o.max_time_to_first_detection_s is None:
        return "-"
    if o.runs_with_undetected_lead:
        return f"≥ {o.max_time_to_first_detection_s:.3g} (never in {o.runs_with_undetected_lead} runs)"
    return f"{o.max_time_to_first_detection_s:.3g}"


def _collision_notes(candidate: Sequence[RunRecord], production: Sequence[RunRecord]) -> list[str]:
    """Every candidate collision, and whether production collided on the same run."""
    prod = {r.spec.run_id: r for r in production}
    notes = []
    for r in candidate:
        if not r.metrics.collisions:
            continue
        s = r.spec
        p = prod.get(s.run_id)
        shared = "production collided too" if p is not None and p.metrics.collisions else "production did not"
        notes.append(
            f"{s.run_id}: {s.category}, {s.actor_type or 'traffic'}, {s.condition} severity {s.severity}, "
            f"{s.ego_speed_mps:g} m/s: {r.metrics.collision_kind} collision with a {r.metrics.collision_with} "
            f"({shared})"
        )
    return notes


RESULT_TEXT: Final[dict[str, str]] = {
    "pass": "pass",
    "amber": "**AMBER**",
    "fail": "**FAIL**",
    "skipped": "skipped",
}


def rationale_markdown(
    verdict: Verdict,
    checks: Sequence[GateCheck],
    c: GroupSummary,
    p: GroupSummary,
    notes: Sequence[str] = (),
    runs: int | None = None,
    sequential: SequentialRecord | None = None,
    outcomes: Sequence[ScenarioOutcome] = (),
) -> str:
    failed = [ch for ch in checks if ch.status == "fail"]
    amber = [ch for ch in checks if ch.status == "amber"]
    on = f"{c.runs if runs is None else runs} paired runs ({c.km:.1f} km) with the same seeds as production"
    if verdict == "green":
        head = f"**Sim gate GREEN**: all {len(checks)} checks pass on {on}."
    elif verdict == "amber":
        head = (
            f"**Sim gate AMBER** (insufficient evidence): {len(amber)} of {len(checks)} checks undecided on "
            f"{on}; none fails."
        )
    else:
        also = f" ({len(amber)} more undecided)" if amber else ""
        head = f"**Sim gate RED**: {len(failed)} of {len(checks)} checks fail{also} on {on}."
    lines = [head, ""]
    if sequential is not None:
        lines += [sequential.describe(), ""]
    for ch in [*failed, *amber]:
        lines.append(
            f"- `{ch.scope}` **{ch.name}** {RESULT_TEXT[ch.status]}: candidate {_fmt(ch.candidate)} vs "
            f"production {_fmt(ch.production)} (limit {ch.limit}){'. ' + ch.detail if ch.detail else ''}"
        )
    if notes:
        lines += ["", "Candidate collisions (see the clips):", *[f"- {n}" for n in notes]]
    if outcomes:
        lines += [
            "",
            "Scenarios (candidate over each scene's runs; production's failures on the same runs):",
            "",
            "| scenario | source | runs | outcome | failures (prod) | collisions | min TTC s | min gap m | hard brakes "
            "| p95 jerk m/s³ | first detection s (worst) |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for o in outcomes:
            lines.append(
                f"| {o.scenario} | {o.source} | {o.runs} | {RESULT_TEXT[o.outcome]} | {o.candidate_failures} "
                f"({o.production_failures}) | {o.candidate_collisions} | {_fmt(o.min_ttc_s)} | {_fmt(o.min_gap_m)} | "
                f"{o.hard_brakes} | {o.max_p95_jerk_mps3:.2f} | {_first_detection_cell(o)} |"
            )
    lines += [
        "",
        "Deltas are candidate - production on the same runs: `point [low, high] (n = runs)`; "
        "absolute checks show the candidate's rate with its Clopper-Pearson interval.",
        "",
        "| check | scope | candidate | production | interval | limit | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for ch in checks:
        cells = [ch.name, ch.scope, _fmt(ch.candidate), _fmt(ch.production), ch.interval or "-", ch.limit]
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|") for c in cells) + f" | {RESULT_TEXT[ch.status]} |"
        )
    return "\n".join(lines)
