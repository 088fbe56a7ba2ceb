"""Group-sequential runs for the sim gate: add seeded runs while the collision rate is undecided.

A sweep of a few dozen runs cannot rule out a collision-rate increase of a few points (the
Wilson upper bound of 0/24 is 13.8 %), so the pooled rate comparison of the gate is amber for
any candidate, good or bad. With ``sweeps.<name>.sequential`` set, the closed-loop simulation
looks at the gate after the sweep and, while a pooled rate comparison is amber and nothing is
red, adds a batch of new seeded runs for both models (same seeds) and looks again, up to
``max_runs`` per model.

Looking repeatedly at a 95 % interval and stopping when it decides would err more often than 5 %.
The looks therefore use *repeated confidence intervals* with O'Brien-Fleming boundaries
(Jennison & Turnbull, *Group Sequential Methods*, ch. 9): at look k of K, with n_k of the
n_K = max_runs runs, the interval uses z_k = c_K * sqrt(n_K / n_k), where c_K holds the chance
that *any* look's interval misses the true difference to 5 %. Early looks are wide (they only
stop for overwhelming evidence); the last is nearly the fixed-sample interval (c_4 = 2.024 vs
1.960), so the budget costs little. c_K assumes equally spaced looks; a sweep whose first look
is not one batch long is spaced slightly unevenly, which the boundaries absorb approximately.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Final

from pydantic import BaseModel, ConfigDict

from adas.simulation.config import MAX_LOOKS, SequentialConfig
from adas.stats import DEFAULT_CONFIDENCE, Verdict

# O'Brien-Fleming constants c_K for K equally spaced looks, two-sided alpha = 0.05 (Jennison &
# Turnbull, Table 2.3), one per look up to config.MAX_LOOKS; tests/simulation/test_sequential.py
# re-derives them by simulation.
OBRIEN_FLEMING_C: Final[dict[int, float]] = {
    1: 1.960,
    2: 1.977,
    3: 2.004,
    4: 2.024,
    5: 2.040,
    6: 2.053,
    7: 2.063,
    8: 2.072,
    9: 2.080,
    10: 2.087,
}


def look_schedule(planned_runs: int, seq: SequentialConfig | None) -> list[int]:
    """Runs per model at each possible look: the sweep, then one batch more each, up to max_runs."""
    if seq is None or planned_runs >= seq.max_runs:
        return [planned_runs]
    # The config bounds the looks for the planned sweep; a library with fewer runs than planned
    # starts lower, and larger batches then keep the looks within the constants' table.
    batch = max(seq.batch_runs, -(-(seq.max_runs - planned_runs) // (MAX_LOOKS - 1)))
    looks = [planned_runs]
    while looks[-1] < seq.max_runs:
        looks.append(min(looks[-1] + batch, seq.max_runs))
    return looks


def look_confidence(schedule: Sequence[int], runs: int) -> float:
    """Two-sided confidence of the repeated interval at a look with ``runs`` runs per model.

    A single look (no sequential rule) is the plain 95 % interval.
    """
    if len(schedule) <= 1:
        return DEFAULT_CONFIDENCE
    c = OBRIEN_FLEMING_C[len(schedule)]
    z = c * math.sqrt(schedule[-1] / max(runs, 1))
    return 1 - 2 * (1 - NormalDist().cdf(z))


class SequentialLook(BaseModel):
    """One look at the pooled rate comparisons: how many runs, at what confidence, what they said."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runs: int
    confidence: float
    verdict: Verdict  # the gate's verdict at this look
    rates: Verdict  # the worst of the pooled rate comparisons at this look


class SequentialRecord(BaseModel):
    """How a sequential sweep went: every look, and why it stopped."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    planned_runs: int
    batch_runs: int
    max_runs: int
    schedule: list[int]
    looks: list[SequentialLook]
    stopped: str
    wall_s: float = 0.0  # the added batches, both models

    @property
    def runs(self) -> int:
        return self.looks[-1].runs if self.looks else self.planned_runs

    @property
    def added_runs(self) -> int:
        return self.runs - self.planned_runs

    @property
    def final_confidence(self) -> float:
        return self.looks[-1].confidence if self.looks else DEFAULT_CONFIDENCE

    def describe(self) -> str:
        """One sentence for the rationale."""
        looks = ", ".join(f"{lk.runs} runs: rates {lk.rates}" for lk in self.looks)
        return (
            f"Sequential rule: {self.planned_runs} planned runs, {self.added_runs} added in "
            f"{len(self.looks) - 1} batch(es) of up to {self.batch_runs} (max {self.max_runs}); looks: {looks}; "
            f"stopped: {self.stopped}. Rate intervals at the last look are {self.final_confidence:.2%} "
            "repeated confidence intervals (O'Brien-Fleming), which keep a 95 % guarantee over every look."
        )


def next_batch(verdict: Verdict, rates: Verdict, runs: int, schedule: Sequence[int]) -> tuple[int, str]:
    """Runs per model to add after a look (0: stop), and why.

    Continue only while a pooled rate comparison is amber, nothing is red (more runs cannot turn
    a red gate green) and the budget allows; the batch ends on the next scheduled look.
    """
    if verdict == "red":
        return 0, "a check is red"
    if rates != "amber":
        return 0, f"the rate comparisons are {rates} at {runs} runs"
    later = [n for n in schedule if n > runs]
    if not later:
        return 0, f"budget spent ({runs} runs, max {schedule[-1]}): the rate comparisons stay amber"
    return later[0] - runs, "a rate comparison is amber"
