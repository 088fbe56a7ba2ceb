"""Rollout analysis: one interval's verdict (candidate vs production samples), the guard that
turns verdicts into continue / advance / pause / roll back, and the candidate-vs-production
difference clusters (the mining request's seed)."""

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from adas.registry.config import AnalysisPolicy
from adas.registry.traffic import Sample

Result = Literal["pass", "fail", "inconclusive"]
Action = Literal["continue", "advance", "rollback", "pause"]


class IntervalAnalysis(BaseModel):
    step: str
    index: int
    t_s: float
    candidate_samples: int
    production_samples: int
    candidate_p95_ms: float | None
    production_p95_ms: float | None
    error_rate: float | None
    disagreement: float | None
    result: Result
    breaches: list[str]
    action: Action = "continue"


def _p95(values: Sequence[float]) -> float | None:
    return float(np.percentile(np.asarray(values), 95)) if values else None


def analyze_window(
    candidate: Sequence[Sample],
    production: Sequence[Sample],
    policy: AnalysisPolicy,
    disagreements: Sequence[float] | None = None,
) -> tuple[Result, dict[str, float | None], list[str]]:
    """One interval's verdict over candidate samples and production samples of the same period
    (``disagreements`` when they come from elsewhere than the candidate samples: shadow diffs)."""
    ok_c = [s.latency_ms for s in candidate if s.ok]
    ok_p = [s.latency_ms for s in production if s.ok]
    errors = sum(1 for s in candidate if not s.ok)
    diffs = (
        list(disagreements)
        if disagreements is not None
        else [s.disagreement for s in candidate if s.disagreement is not None]
    )
    metrics: dict[str, float | None] = {
        "candidate_p95_ms": _p95(ok_c),
        "production_p95_ms": _p95(ok_p),
        "error_rate": errors / len(candidate) if candidate else None,
        "disagreement": float(np.mean(diffs)) if diffs else None,
    }
    if len(candidate) < policy.min_samples:
        return "inconclusive", metrics, [f"{len(candidate)} candidate samples < {policy.min_samples}"]
    breaches = []
    er = metrics["error_rate"] or 0.0
    if er > policy.max_error_rate:
        breaches.append(f"error rate {er:.1%} > {policy.max_error_rate:.1%}")
    cp, pp = metrics["candidate_p95_ms"], metrics["production_p95_ms"]
    if cp is not None and pp is not None:
        limit = pp * policy.max_p95_latency_ratio + policy.p95_latency_slack_ms
        if cp > limit:
            breaches.append(f"p95 {cp:.1f} ms > {limit:.1f} ms (production {pp:.1f} ms)")
    if cp is not None and policy.max_p95_latency_ms is not None and cp > policy.max_p95_latency_ms:
        breaches.append(f"p95 {cp:.1f} ms > absolute limit {policy.max_p95_latency_ms:g} ms")
    d = metrics["disagreement"]
    if d is not None and d > policy.max_disagreement:
        breaches.append(f"disagreement {d:.2f} > {policy.max_disagreement:.2f}")
    if pp is None and not breaches:
        return "inconclusive", metrics, ["no production samples to compare with"]
    return ("fail" if breaches else "pass"), metrics, breaches


class Guard:
    """Counts failures and inconclusive intervals; says continue, advance, pause or roll back."""

    def __init__(self, policy: AnalysisPolicy) -> None:
        self.policy = policy
        self.consecutive_fails = 0
        self.total_fails = 0
        self.consecutive_inconclusive = 0
        self.first_breach_at: float | None = None
        self.reason: str | None = None

    def observe(self, result: Result, t: float, bake_over: bool, breaches: Sequence[str]) -> Action:
        p = self.policy
        if result == "fail":
            self.consecutive_fails += 1
            self.total_fails += 1
            self.consecutive_inconclusive = 0
            if self.consecutive_fails == 1:
                self.first_breach_at = t
            if self.consecutive_fails >= p.consecutive_breaches:
                self.reason = f"{self.consecutive_fails} consecutive breaches: {'; '.join(breaches)}"
                return "rollback"
            if self.total_fails >= p.failure_limit:
                self.reason = (
                    f"failure limit reached ({self.total_fails} failed intervals): {'; '.join(breaches)}"
                )
                return "rollback"
            return "continue"
        self.consecutive_fails = 0
        self.first_breach_at = None
        if result == "inconclusive":
            self.consecutive_inconclusive += 1
            if self.consecutive_inconclusive >= p.inconclusive_limit:
                self.reason = (
                    f"{self.consecutive_inconclusive} inconclusive intervals in a row: {'; '.join(breaches)}"
                )
                return "rollback"
            return "pause" if bake_over else "continue"
        self.consecutive_inconclusive = 0
        return "advance" if bake_over else "continue"


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
