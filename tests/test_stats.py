"""Intervals and three-valued verdicts (adas.stats)."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from adas.stats import (
    Interval,
    bootstrap_statistic,
    clopper_pearson_interval,
    decide,
    paired_binary,
    rank_compare,
    weighted_mean,
    wilson_interval,
)


def test_bootstrap_of_a_mean_agrees_with_scipy() -> None:
    x = np.random.default_rng(3).gamma(2.0, 1.5, size=80)
    ours = bootstrap_statistic(x, weighted_mean, n_resamples=10_000, seed=11)
    ref = sps.bootstrap((x,), np.mean, n_resamples=10_000, method="percentile", random_state=11)
    se = x.std(ddof=1) / math.sqrt(len(x))
    # Two independent Monte-Carlo estimates of the same 2.5% / 97.5% quantiles: with 10,000
    # resamples each, their difference has a standard deviation of ~0.04 standard errors.
    assert ours.low == pytest.approx(ref.confidence_interval.low, abs=0.2 * se)
    assert ours.high == pytest.approx(ref.confidence_interval.high, abs=0.2 * se)
    assert ours.point == pytest.approx(x.mean())
    assert ours.n == 80


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        (Interval(-0.030, -0.045, -0.021, 700), "red"),  # all of it below -0.015
        (Interval(0.004, -0.010, 0.019, 700), "green"),  # none of it below -0.015
        (Interval(-0.008, -0.031, 0.012, 40), "amber"),  # straddles -0.015
    ],
)
def test_three_valued_verdict(interval: Interval, verdict: str) -> None:
    decision = decide(interval, tolerance=0.015)
    assert decision.verdict == verdict
    assert interval.format() in decision.reason


def test_amber_names_the_sample_size_that_would_decide() -> None:
    d = decide(Interval(-0.008, -0.031, 0.012, 40), tolerance=0.015)
    # Half-width 0.0215 must shrink to the 0.007 margin: n x (0.0215 / 0.007)^2 = 40 x 9.43 -> 378.
    assert d.n_to_decide == 378
    assert "about 378 would decide it" in d.reason


def test_lower_is_better_metrics_flip_the_direction() -> None:
    # Collision rate: candidate minus production of +0.08 [0.05, 0.12] is a regression.
    assert decide(Interval(0.08, 0.05, 0.12, 300), 0.0, higher_is_better=False).verdict == "red"
    assert decide(Interval(-0.01, -0.02, -0.001, 300), 0.0, higher_is_better=False).verdict == "green"


def test_rate_intervals_cover_zero_counts_and_match_references() -> None:
    w = wilson_interval(0, 30)
    assert w.low == 0.0 and w.high == pytest.approx(0.1135, abs=1e-4)  # the Wilson bound for 0/30
    cp = clopper_pearson_interval(0, 30)
    assert cp.high == pytest.approx(1 - 0.025 ** (1 / 30), rel=1e-9)  # exact bound when k = 0
    ref = sps.binomtest(7, 50).proportion_ci(method="exact")
    ours = clopper_pearson_interval(7, 50)
    assert (ours.low, ours.high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_mcnemar_is_the_exact_binomial_test_of_discordant_pairs() -> None:
    cand = [True] * 3 + [False] * 27
    prod = [False] * 30
    paired = paired_binary(cand, prod)
    assert (paired.candidate_only, paired.production_only) == (3, 0)
    assert paired.p_value == pytest.approx(0.25)  # 2 x 0.5^3
    big = paired_binary([True] * 30 + [False] * 270, [False] * 300)
    assert big.p_value < 1e-8
    diff = big.rate_difference()
    assert diff.point == pytest.approx(0.1) and diff.low > 0.0


def test_rank_comparison_tells_a_slower_canary_from_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.lognormal(np.log(30), 0.3, 400)
    same = rng.lognormal(np.log(30), 0.3, 400)
    slow = rng.lognormal(np.log(45), 0.3, 400)
    assert rank_compare(same, base).p_value > 0.01
    slower = rank_compare(slow, base)
    assert slower.p_value < 1e-10 and slower.common_language_effect > 0.8
    assert slower.median_ratio == pytest.approx(1.5, rel=0.1)


def test_paired_rate_difference_never_collapses_without_discordant_pairs() -> None:
    # Both models fail on the same 2 of 84 runs: no discordant pair. Uncorrected, phi = 1 gives a
    # zero-width interval; Newcombe's continuity-corrected phi keeps it about as wide as the
    # bound on the discordant runs (Wilson upper bound of 0/84 = 4.4 %).
    shared = paired_binary([True] * 2 + [False] * 82, [True] * 2 + [False] * 82)
    diff = shared.rate_difference()
    assert diff.point == 0.0 and -diff.low == pytest.approx(diff.high) and 0.03 < diff.high < 0.06
    tiny = paired_binary([True, False], [True, False]).rate_difference()
    assert tiny.low < -0.5 and tiny.high > 0.5
    # Worked by hand: a = 5, b = 3, c = 1, d = 31 (n = 40): AD - BC = 152, less N/2: phi = 132 / sqrt(8 x 32 x 6 x 34).
    p1, p2 = 8 / 40, 6 / 40
    w1, w2 = wilson_interval(8, 40), wilson_interval(6, 40)
    phi = 132 / math.sqrt(8 * 32 * 6 * 34)
    low = (p1 - p2) - math.sqrt(
        (p1 - w1.low) ** 2 - 2 * phi * (p1 - w1.low) * (w2.high - p2) + (w2.high - p2) ** 2
    )
    table = paired_binary(
        [True] * 5 + [True] * 3 + [False] * 1 + [False] * 31,
        [True] * 5 + [False] * 3 + [True] * 1 + [False] * 31,
    )
    assert table.rate_difference().low == pytest.approx(low, rel=1e-12)
