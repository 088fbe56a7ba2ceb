"""Rollout analysis: one interval's verdict (the canary against the baseline over the same
window), the guard that turns verdicts into continue / advance / hold / roll back, and the
candidate-vs-production difference clusters (the mining request's seed).

Latency is judged as Kayenta's judge does: a one-sided Mann-Whitney U test of the canary's
latencies against the baseline's over the same window, plus a minimum effect size. A busy host
slows both arms of a window alike, so it moves neither the ranks nor the median ratio much;
a percentile compared with a fixed budget moves with every burst of load.
"""

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from adas.registry.config import AnalysisPolicy
from adas.registry.traffic import Sample
from adas.stats import RankComparison, rank_compare

Result = Literal["pass", "fail", "inconclusive"]
Action = Literal["continue", "advance", "hold", "rollback"]


class IntervalAnalysis(BaseModel):
    step: str
    index: int
    t_s: float
    candidate_samples: int
    baseline_samples: int
    candidate_median_ms: float | None
    baseline_median_ms: float | None
    candidate_p95_ms: float | None
    baseline_p95_ms: float | None
    # The rank test of the window (None: too few samples in an arm to run it).
    latency_p_value: float | None
    latency_effect: float | None  # P(canary > baseline): 0.5 is no difference
    latency_median_ratio: float | None
    error_rate: float | None
    disagreement: float | None
    result: Result
    reasons: list[str]
    action: Action = "continue"


@dataclass(frozen=True)
class WindowVerdict:
    """One window's result; ``reasons`` name what failed or could not be judged, each with its
    statistic. ``immediate``: an error burst or an absolute SLO breach, rolled back at once."""

    result: Result
    reasons: list[str]
    metrics: dict[str, float | None] = field(default_factory=dict)
    immediate: bool = False
    latency: RankComparison | None = None


def _percentile(values: Sequence[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def analyze_window(
    candidate: Sequence[Sample],
    baseline: Sequence[Sample],
    policy: AnalysisPolicy,
    disagreements: Sequence[float] | None = None,
) -> WindowVerdict:
    """One interval's verdict over the candidate's samples and the baseline's (production
    serving the same period; ``disagreements`` when they come from elsewhere than the candidate
    samples: shadow diffs)."""
    ok_c = [s.latency_ms for s in candidate if s.ok]
    ok_b = [s.latency_ms for s in baseline if s.ok]
    errors = sum(1 for s in candidate if not s.ok)
    diffs = (
        list(disagreements)
        if disagreements is not None
        else [s.disagreement for s in candidate if s.disagreement is not None]
    )
    metrics: dict[str, float | None] = {
        "candidate_median_ms": _percentile(ok_c, 50),
        "baseline_median_ms": _percentile(ok_b, 50),
        "candidate_p95_ms": _percentile(ok_c, 95),
        "baseline_p95_ms": _percentile(ok_b, 95),
        "latency_p_value": None,
        "latency_effect": None,
        "latency_median_ratio": None,
        "error_rate": errors / len(candidate) if candidate else None,
        "disagreement": float(np.mean(diffs)) if diffs else None,
    }
    p = policy
    if len(candidate) < p.min_samples:
        return WindowVerdict(
            "inconclusive", [f"too few samples: {len(candidate)} canary requests < {p.min_samples}"], metrics
        )
    latency: RankComparison | None = None
    if len(ok_c) >= p.min_samples and len(ok_b) >= p.min_samples:
        latency = rank_compare(ok_c, ok_b)
        metrics["latency_p_value"] = latency.p_value
        metrics["latency_effect"] = latency.common_language_effect
        metrics["latency_median_ratio"] = _finite(latency.median_ratio)

    # Errors and the canary's own SLO need no baseline: one window is enough to roll back.
    immediate = []
    error_rate = metrics["error_rate"] or 0.0
    if error_rate > p.max_error_rate:
        immediate.append(
            f"errors: {errors} of {len(candidate)} canary requests failed "
            f"({error_rate:.1%} > {p.max_error_rate:.1%})"
        )
    cp95 = metrics["candidate_p95_ms"]
    if cp95 is not None and p.max_p95_latency_ms is not None and cp95 > p.max_p95_latency_ms:
        immediate.append(
            f"latency SLO: canary p95 {cp95:.1f} ms > {p.max_p95_latency_ms:g} ms (n = {len(ok_c)})"
        )
    if immediate:
        return WindowVerdict("fail", immediate, metrics, immediate=True, latency=latency)

    fails, undecided = [], []
    span_s = max(s.t_start for s in candidate) - min(s.t_start for s in candidate)
    if latency is None:
        undecided.append(
            f"latency: too few samples to compare ({len(ok_c)} canary vs {len(ok_b)} baseline, "
            f"{p.min_samples} needed in each)"
        )
    elif span_s < p.min_window_span_s:
        # The first second of a step is one burst of host load: an identical candidate's 1-2 s
        # windows reached a median ratio of 1.64 on a loaded host; longer ones stay near 1.
        undecided.append(
            f"latency: the window spans {span_s:.1f} s < {p.min_window_span_s:g} s ({latency.describe()})"
        )
    elif (
        latency.p_value < p.latency_alpha
        and latency.median_ratio >= p.min_latency_median_ratio
        and latency.common_language_effect >= p.min_latency_effect
    ):
        fails.append(
            f"latency: {latency.describe()}; fails at p < {p.latency_alpha:g} with median ratio "
            f">= {p.min_latency_median_ratio:g} and P(canary > baseline) >= {p.min_latency_effect:g}"
        )
    # Disagreement stays a bound on the mean, not a rank test: production's answers ARE the
    # reference, so the baseline's disagreement is 0 by construction (no distribution to rank
    # against), and replaying a frame gives the same answer every time (the requests of a window
    # are repeats of a few frames, not independent samples a test could count).
    d = metrics["disagreement"]
    if d is not None and d > p.max_disagreement:
        fails.append(
            f"disagreement: mean {d:.2f} > {p.max_disagreement:.2f} over {len(diffs)} compared answers"
        )
    if fails:
        return WindowVerdict("fail", fails, metrics, latency=latency)
    if undecided:
        return WindowVerdict("inconclusive", undecided, metrics, latency=latency)
    return WindowVerdict("pass", [], metrics, latency=latency)


class Guard:
    """Turns window verdicts into continue, advance, hold (the step is extended for more
    evidence) or roll back.

    An error burst or an absolute SLO breach rolls back at once. A failed comparison rolls back
    after ``consecutive_breaches`` in a row (windows overlap: one burst of scheduling noise must
    not decide alone) or ``failure_limit`` in all. A step advances once its bake time is over
    and its latest window passed; until then it is held, for at most ``max_extension_s`` past the
    bake time, after which a candidate that could not be judged rolls back.
    """

    def __init__(self, policy: AnalysisPolicy) -> None:
        self.policy = policy
        self.consecutive_fails = 0
        self.total_fails = 0
        self.first_breach_at: float | None = None
        self.reason: str | None = None  # why it rolled back
        self.hold_reason: str | None = None  # why the latest interval held the step

    def observe(self, verdict: WindowVerdict, t: float, step_elapsed_s: float, bake_s: float) -> Action:
        p = self.policy
        reasons = "; ".join(verdict.reasons)
        self.hold_reason = None
        if verdict.result == "fail":
            if self.first_breach_at is None:
                self.first_breach_at = t
            if verdict.immediate:
                self.reason = f"rolled back at once: {reasons}"
                return "rollback"
            self.consecutive_fails += 1
            self.total_fails += 1
            if self.consecutive_fails >= p.consecutive_breaches:
                self.reason = f"{self.consecutive_fails} failed windows in a row: {reasons}"
                return "rollback"
            if self.total_fails >= p.failure_limit:
                self.reason = f"failure limit reached ({self.total_fails} failed windows): {reasons}"
                return "rollback"
        elif verdict.result == "pass":
            self.consecutive_fails = 0
            self.first_breach_at = None
            return "advance" if step_elapsed_s >= bake_s else "continue"
        # A failure below the limits, or no verdict (an inconclusive window leaves the failure
        # streak as it is: it is evidence neither way).
        if step_elapsed_s < bake_s:
            return "continue"
        extra = step_elapsed_s - bake_s
        if extra > p.max_extension_s:
            self.reason = (
                f"no passing window {extra:.0f} s past the bake time "
                f"(max extension {p.max_extension_s:g} s): {reasons}"
            )
            return "rollback"
        self.hold_reason = f"held for more evidence ({extra:.0f} s past the bake time): {reasons}"
        return "hold"


def _frame_tags(meta: Sequence[dict[str, Any]], frame: int) -> str:
    m = meta[frame] if frame < len(meta) else {}
    parts = [f"{k}={m[k]}" for k in ("scenario", "weather", "lighting") if k in m]
    return ", ".join(parts) or "untagged"


def diff_clusters(
    samples: Sequence[Sample], meta: Sequence[dict[str, Any]], classes: dict[int, str]
) -> list[dict[str, Any]]:
    """Candidate-vs-production differences grouped by the recorded frames' tags: where the
    candidate disagrees, and which classes it misses or adds there (the mining request's seed)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.disagreement is not None:
            groups[_frame_tags(meta, s.frame)].append(s)
    out = []
    for tags, group in groups.items():
        missed: Counter[str] = Counter()
        extra: Counter[str] = Counter()
        for s in group:
            missed.update({classes.get(c, str(c)): n for c, n in s.missed.items()})
            extra.update({classes.get(c, str(c)): n for c, n in s.extra.items()})
        out.append(
            {
                "cluster": tags,
                "samples": len(group),
                "frames": len({s.frame for s in group}),
                "mean_disagreement": round(float(np.mean([s.disagreement for s in group])), 4),
                "missed": dict(missed.most_common()),
                "extra": dict(extra.most_common()),
                "example_frames": sorted({s.frame for s in group if (s.disagreement or 0) > 0})[:8],
            }
        )
    return sorted(out, key=lambda c: -c["mean_disagreement"])
