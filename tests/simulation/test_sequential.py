"""Group-sequential runs: O'Brien-Fleming looks, the stopping rule, new seeded batches, and the
demo budget deciding a candidate equal to production."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from adas.simulation.closed_loop_simulation import extend_sequentially
from adas.simulation.config import MAX_LOOKS, MetricsConfig, SequentialConfig, SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.gate import evaluate_gate
from adas.simulation.metrics import RunRecord, episode_metrics
from adas.simulation.planning import plan_batch, plan_runs
from adas.simulation.sequential import (
    OBRIEN_FLEMING_C,
    look_confidence,
    look_schedule,
    next_batch,
)
from adas.simulation.sweep import SweepResult
from tests.simulation.test_metrics_gate import _trace


def test_obrien_fleming_constants_hold_the_error_over_all_looks() -> None:
    """Re-derive the tabulated c_K: with K equally spaced looks of a standardized sum, the chance
    that any look crosses c_K sqrt(K / k) is 5 %."""
    assert set(OBRIEN_FLEMING_C) == set(range(1, MAX_LOOKS + 1))
    rng = np.random.default_rng(7)
    paths = 200_000
    for k_looks, c in OBRIEN_FLEMING_C.items():
        sums = np.cumsum(rng.standard_normal((paths, k_looks)), axis=1)
        crossed = np.any(np.abs(sums) / math.sqrt(k_looks) > c, axis=1).mean()
        assert crossed == pytest.approx(0.05, abs=0.003), (k_looks, crossed)


def test_looks_and_their_confidence() -> None:
    seq = SequentialConfig(batch_runs=20, max_runs=84)
    schedule = look_schedule(24, seq)
    assert schedule == [24, 44, 64, 84]
    confidences = [look_confidence(schedule, n) for n in schedule]
    # Early looks are wide; the last is the fixed-sample interval at z = c_4 = 2.024.
    assert confidences == sorted(confidences, reverse=True)
    assert confidences[0] > 0.9998 and confidences[-1] == pytest.approx(0.95703, abs=1e-5)
    assert look_schedule(24, None) == [24] and look_confidence([24], 24) == 0.95
    # A library with fewer runs than planned starts lower: batches grow to keep <= MAX_LOOKS looks.
    short = look_schedule(2, SequentialConfig(batch_runs=5, max_runs=84))
    assert len(short) <= MAX_LOOKS and short[0] == 2 and short[-1] == 84


@pytest.mark.parametrize(
    ("verdict", "rates", "runs", "added"),
    [
        ("amber", "amber", 24, 20),  # undecided: one more batch
        ("amber", "amber", 64, 20),
        ("amber", "amber", 84, 0),  # budget spent
        ("red", "amber", 24, 0),  # a red check: more runs cannot make it green
        ("amber", "green", 24, 0),  # the rates are decided; something else is amber
        ("green", "green", 44, 0),
    ],
)
def test_next_batch(verdict: str, rates: str, runs: int, added: int) -> None:
    n, why = next_batch(verdict, rates, runs, [24, 44, 64, 84])  # type: ignore[arg-type]
    assert n == added and why


def test_batches_are_new_seeded_runs_in_the_sweep_proportions(sim_cfg: SimulationConfig) -> None:
    sweep = plan_runs(sim_cfg, "demo")
    one, two = plan_batch(sim_cfg, "demo", 1, 20), plan_batch(sim_cfg, "demo", 2, 10)
    assert Counter(r.category for r in one) == sim_cfg.sweeps["demo"].runs
    assert sum(Counter(r.category for r in two).values()) == 10
    every = [*sweep, *one, *two]
    assert len({r.run_id for r in every}) == len({r.seed for r in every}) == len(every)
    assert one == plan_batch(sim_cfg, "demo", 1, 20)  # reproducible: checkpoints are reused
    assert sweep == plan_runs(sim_cfg, "demo")  # the sweep itself is unchanged
    with pytest.raises(ValueError, match="count from 1"):
        plan_batch(sim_cfg, "demo", 0, 5)


def _record(model: str, spec: EpisodeSpec, collided: bool) -> RunRecord:
    n = 30
    tr = _trace(
        [25.0] * n,
        [40.0] * n,
        [math.inf] * n,
        collision={"t_s": 5.0, "with": "car", "kind": "front"} if collided else None,
    )
    return RunRecord(model=model, spec=spec, metrics=episode_metrics(spec, tr, MetricsConfig()), wall_s=0.0)


def _sweep(model: str, runs: Sequence[EpisodeSpec], collides: Callable[[EpisodeSpec], bool]) -> SweepResult:
    return SweepResult(
        perception=model,
        records=[_record(model, r, collides(r)) for r in runs],
        clip_keys={},
        shards_total=1,
        shards_computed=[0],
    )


def _never(_: EpisodeSpec) -> bool:
    return False


def _demo_runs(sim_cfg: SimulationConfig) -> list[EpisodeSpec]:
    """The demo sweep as the asset plans it: 20 category runs and 4 library runs."""
    library = [
        r.model_copy(update={"run_id": f"library-{i}", "source": "library:flagged", "seed": 10_000 + i})
        for i, r in enumerate(plan_runs(sim_cfg, "benchmark")[:4])
    ]
    runs = plan_runs(sim_cfg, "demo", library)
    assert len(runs) == 24
    return runs


def _batches(candidate: Callable[[EpisodeSpec], bool], production: Callable[[EpisodeSpec], bool]):  # type: ignore[no-untyped-def]
    calls: list[int] = []

    def run_batch(batch: Sequence[EpisodeSpec]) -> dict[str, SweepResult]:
        calls.append(len(batch))
        return {
            "candidate": _sweep("candidate", batch, candidate),
            "production": _sweep("production", batch, production),
        }

    return run_batch, calls


def test_the_demo_budget_decides_a_candidate_as_safe_as_production(sim_cfg: SimulationConfig) -> None:
    """Identical models on the demo sweep: not red but amber at 24 runs (0/24 vs 0/24 cannot rule out
    +5 points); the sequential rule adds 3 batches of 20 and is green at 84 runs."""
    runs = _demo_runs(sim_cfg)
    cand, prod = _sweep("candidate", runs, _never), _sweep("production", runs, _never)
    first = evaluate_gate(cand.records, prod.records, sim_cfg.gate)
    assert first.verdict == "amber" and first.rates == "amber"
    assert {c.name for c in first.amber_checks} == {"collision_rate_increase", "failure_rate_increase"}
    run_batch, calls = _batches(_never, _never)
    cand, prod, added, record = extend_sequentially(sim_cfg, "demo", cand, prod, run_batch)
    assert calls == [20, 20, 20] and len(added) == 60 and len(cand.records) == len(prod.records) == 84
    assert [look.runs for look in record.looks] == [24, 44, 64, 84]
    assert [look.rates for look in record.looks] == ["amber", "amber", "amber", "green"]
    assert record.added_runs == 60 and "green" in record.stopped
    final = evaluate_gate(
        cand.records, prod.records, sim_cfg.gate, rate_confidence=record.final_confidence, sequential=record
    )
    assert final.verdict == "green" and final.runs == 84
    assert "Sequential rule: 24 planned runs, 60 added in 3 batch(es)" in final.rationale


def test_a_worse_candidate_stops_at_the_budget_or_red(sim_cfg: SimulationConfig) -> None:
    runs = _demo_runs(sim_cfg)

    # Collides in every 10th new fog run production drives through: a few points worse, never
    # enough to be sure within 84 runs -> amber at the budget. Not in an extracted scenario: one
    # the candidate still fails is red by itself (library_scenario_still_fails).
    def some(spec: EpisodeSpec) -> bool:
        return spec.weather != "clear" and spec.seed % 10 == 0 and not spec.source.startswith("library:")

    cand, prod = _sweep("candidate", runs, some), _sweep("production", runs, _never)
    run_batch, calls = _batches(some, _never)
    cand, prod, _, record = extend_sequentially(sim_cfg, "demo", cand, prod, run_batch)
    assert record.runs == 84 and "budget spent" in record.stopped
    assert sum(r.metrics.collisions for r in cand.records) == 3  # 3/84 vs 0/84: undecided
    assert record.looks[-1].rates != "green"

    # Collides in clear cut-in scenes: red (NCAP) at the first look, no batch added.
    def ncap(spec: EpisodeSpec) -> bool:
        return spec.category == "cut_in" and spec.weather == "clear"

    cand, prod = _sweep("candidate", runs, ncap), _sweep("production", runs, _never)
    run_batch, calls = _batches(ncap, _never)
    _, _, added, record = extend_sequentially(sim_cfg, "demo", cand, prod, run_batch)
    assert (
        calls == []
        and added == []
        and record.looks[0].verdict == "red"
        and record.stopped == "a check is red"
    )
