"""What a rollout records: its steps, the breach timing of a rollback, and the report."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from adas.registry.rollout.analysis import IntervalAnalysis


class StepRecord(BaseModel):
    name: str
    weight: float
    mode: str
    generation: int
    started_s: float
    ended_s: float | None = None
    result: Literal["passed", "failed", "running"] = "running"
    intervals: int = 0
    # Intervals the step was held past its bake time for more evidence, and for how long.
    paused_intervals: int = 0
    extended_s: float = 0.0
    reload: dict[str, float] = {}


class BreachTiming(BaseModel):
    first_breach_s: float
    decision_s: float
    rollback_config_live_s: float
    rollback_drained_s: float
    last_candidate_response_s: float | None

    @property
    def breach_to_rollback_s(self) -> float:
        return self.rollback_drained_s - self.first_breach_s

    @property
    def decision_to_rollback_s(self) -> float:
        return self.rollback_drained_s - self.decision_s


class RolloutReport(BaseModel):
    outcome: Literal["promoted", "rolled_back"]
    reason: str
    strategy: str
    target: str
    started_at: datetime
    duration_s: float
    steps: list[StepRecord]
    intervals: list[IntervalAnalysis]
    requests: dict[str, Any]
    throughput_rps: float
    # What production answered per second alone (clients as fast as answered), and the rate
    # offered after the baseline (``None``: not paced, clients as fast as answered throughout).
    capacity_rps: float | None = None
    offered_rps: float | None = None
    dropped_requests: int
    dropped_production_requests: int
    reloads: int
    breach: BreachTiming | None = None
    diff_clusters: list[dict[str, Any]] = []
    mirrored: dict[str, int] = {}

    def to_markdown(self) -> str:
        lines = [
            f"### Rollout {self.outcome.upper()} on {self.target} ({self.strategy}): {self.reason}",
            "",
            f"- {self.requests['sent']} requests in {self.duration_s:.1f} s ({self.throughput_rps:.1f} req/s), "
            f"by arm {self.requests['by_arm']}; dropped: {self.dropped_requests} "
            f"(production: {self.dropped_production_requests}); {self.reloads} nginx reloads",
            "- offered load: "
            + (
                f"{self.offered_rps:.1f} req/s, paced ({self.capacity_rps:.1f} req/s answered by production alone)"
                if self.offered_rps is not None and self.capacity_rps is not None
                else "as fast as answered (not paced)"
            ),
        ]
        if self.breach:
            b = self.breach
            lines.append(
                f"- first breach at {b.first_breach_s:.2f} s, rollback decided at {b.decision_s:.2f} s, "
                f"production-only config live at {b.rollback_config_live_s:.2f} s, old workers drained at "
                f"{b.rollback_drained_s:.2f} s: breach to full rollback {b.breach_to_rollback_s:.2f} s "
                f"(decision to rollback {b.decision_to_rollback_s:.2f} s)"
            )
        lines += [
            "",
            "| step | share | result | intervals (held) | extended | latency, last window | t |",
            "|---|---|---|---|---|---|---|",
        ]
        for s in self.steps:
            last = next((i for i in reversed(self.intervals) if i.step == s.name), None)
            lines.append(
                f"| {s.name} | {s.weight:g}% | {s.result} | {s.intervals} ({s.paused_intervals}) | "
                f"{s.extended_s:.1f} s | {_latency_test(last)} | {s.started_s:.1f}-{(s.ended_s or 0):.1f} s |"
            )
        failing = [i for i in self.intervals if i.result == "fail"][-3:]
        if failing:
            lines += [
                "",
                "Last failed windows:",
                *(f"- {i.step} @ {i.t_s:.1f} s: {'; '.join(i.reasons)}" for i in failing),
            ]
        return "\n".join(lines)


def _latency_test(interval: IntervalAnalysis | None) -> str:
    """The rank test of a window in a table cell (no ``|``: it would split the cell)."""
    if interval is None or interval.latency_p_value is None:
        return "not run (too few samples)"
    ratio = "n/a" if interval.latency_median_ratio is None else f"{interval.latency_median_ratio:.2f}"
    return (
        f"p = {interval.latency_p_value:.3g}, P(canary > baseline) = {interval.latency_effect:.2f}, "
        f"median ratio {ratio} (n = {interval.candidate_samples} vs {interval.baseline_samples})"
    )
