"""Intervals, paired tests and three-valued verdicts, shared by every gate.

A gate that compares point estimates cannot say how sure it is. Every comparison here returns
an interval and a verdict with three values:

* **red**: the interval shows a regression beyond the tolerance (all of it is worse);
* **green**: the interval rules such a regression out (none of it is that much worse);
* **amber** ("insufficient evidence"): the interval straddles the tolerance; the verdict names
  the sample size that would decide it, estimated from the observed spread.

Bootstrap intervals are *percentile* intervals. BCa corrects bias and skew at the cost of a
jackknife over every image (700 re-evaluations per metric here), and the paired deltas these
gates bootstrap are near-symmetric and nearly unbiased, so the percentile interval is the one
we can afford on every slice and class; the calibration test in the suite checks its coverage.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

Verdict = Literal["green", "amber", "red"]
DEFAULT_RESAMPLES = 2000
DEFAULT_CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval over ``n`` sampling units."""

    point: float
    low: float
    high: float
    n: int
    confidence: float = DEFAULT_CONFIDENCE

    def __post_init__(self) -> None:
        if not (self.low <= self.point <= self.high) and not any(
            math.isnan(v) for v in (self.low, self.point, self.high)
        ):
            # A percentile interval can exclude its own point estimate on skewed data; keep the
            # interval as computed but never report a point outside it.
            object.__setattr__(self, "low", min(self.low, self.point))
            object.__setattr__(self, "high", max(self.high, self.point))

    def format(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        """``point [low, high] (n = ...)``, e.g. ``-0.80 [-2.10, 0.40] (n = 40)``."""
        f = f"{{:+.{digits}f}}"
        return (
            f"{f.format(self.point * scale)}{unit} [{f.format(self.low * scale)}, "
            f"{f.format(self.high * scale)}] (n = {self.n})"
        )

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Decision:
    """A three-valued verdict on one metric, with what it was decided from."""

    verdict: Verdict
    interval: Interval
    tolerance: float
    reason: str
    # Sampling units (images, episodes) that would likely decide an amber verdict; None otherwise.
    n_to_decide: int | None = None


def percentile_interval(
    samples: np.ndarray, point: float, n: int, confidence: float = DEFAULT_CONFIDENCE
) -> Interval:
    """The percentile bootstrap interval of ``samples`` (NaNs, from resamples where the metric is
    undefined, are left out)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[~np.isnan(s)]
    if not s.size:
        return Interval(point, math.nan, math.nan, n, confidence)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(s, [alpha, 1 - alpha])
    return Interval(float(point), float(low), float(high), n, confidence)


def resample_weights(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap multiplicities ``[n_resamples, n]``: how often each unit is drawn (rows sum to n)."""
    if n == 0:
        return np.zeros((n_resamples, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_resamples).astype(np.float64)


def bootstrap_statistic(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """Percentile interval of ``statistic(values, weights[R, n]) -> [R]`` over resampled units."""
    x = np.asarray(values, dtype=np.float64)
    w = resample_weights(len(x), n_resamples, np.random.default_rng(seed))
    point = float(statistic(x, np.ones((1, len(x))))[0])
    return percentile_interval(statistic(x, w), point, len(x), confidence)


def weighted_mean(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    return (w @ x) / np.maximum(w.sum(axis=1), 1e-300)


def decide(
    interval: Interval, tolerance: float, *, higher_is_better: bool = True, what: str = "delta"
) -> Decision:
    """Red when the whole interval is a regression beyond ``tolerance``; green when none of it
    is; amber otherwise, with the sample size that would likely decide it.

    ``interval`` is of a delta (candidate - production). With ``higher_is_better`` a regression
    is a delta below ``-tolerance``; otherwise (rates of collisions, latency) above ``+tolerance``.
    """
    sign = 1.0 if higher_is_better else -1.0
    # In "goodness" units: a regression is below -tolerance.
    low, high = sorted((sign * interval.low, sign * interval.high))
    point = sign * interval.point
    text = interval.format()
    if math.isnan(low) or math.isnan(high):
        return Decision("amber", interval, tolerance, f"{what} {text}: undefined on the resamples", None)
    if high < -tolerance:
        return Decision(
            "red", interval, tolerance, f"{what} {text} is worse than the tolerance {tolerance:g}"
        )
    if low >= -tolerance:
        return Decision(
            "green", interval, tolerance, f"{what} {text} rules out a regression beyond {tolerance:g}"
        )
    n = samples_to_decide(interval, tolerance, point)
    more = f"; about {n} would decide it" if n else ""
    return Decision(
        "amber",
        interval,
        tolerance,
        f"insufficient evidence: {what} {text} straddles the tolerance {tolerance:g}{more}",
        n,
    )


def samples_to_decide(interval: Interval, tolerance: float, point: float | None = None) -> int | None:
    """Units needed for the interval to clear ``-tolerance`` at the observed spread.

    The half-width shrinks as 1/sqrt(n); the interval stops straddling when the half-width is
    below the distance from the point estimate to the tolerance. None when the point sits on the
    tolerance itself (no sample size decides it).
    """
    p = interval.point if point is None else point
    margin = abs(p + tolerance)
    if margin < 1e-12 or interval.n <= 0 or interval.half_width <= 0:
        return None
    return math.ceil(interval.n * (interval.half_width / margin) ** 2)


def wilson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Wilson score interval of a binomial rate (good coverage down to 0/n)."""
    if n <= 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), n, confidence)


def clopper_pearson_interval(successes: int, n: int, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
    """Exact (Clopper-Pearson) interval of a binomial rate: conservative, never below nominal."""
    from scipy.stats import beta  # scipy.stats costs ~0.4 s at import

    if n <= 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    alpha = 1 - confidence
    low = 0.0 if successes == 0 else float(beta.ppf(alpha / 2, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - alpha / 2, successes + 1, n - successes))
    return Interval(successes / n, low, high, n, confidence)


@dataclass(frozen=True)
class PairedBinary:
    """Paired binary outcomes (e.g. collision or not) of candidate and production on shared seeds."""

    n: int
    candidate_only: int  # discordant: the candidate failed, production did not
    production_only: int  # discordant: production failed, the candidate did not
    both: int

    @property
    def p_value(self) -> float:
        """Exact two-sided McNemar test: a binomial test of the discordant pairs at 1/2."""
        from scipy.stats import binomtest  # scipy.stats costs ~0.4 s at import

        k = self.candidate_only + self.production_only
        if k == 0:
            return 1.0
        return float(binomtest(self.candidate_only, k, 0.5).pvalue)

    def rate_difference(self, confidence: float = DEFAULT_CONFIDENCE) -> Interval:
        """Candidate minus production failure rate, with Newcombe's interval for paired
        proportions (method 10: Wilson limits of each rate plus the phi correlation, phi with
        Newcombe's continuity correction)."""
        n = self.n
        if n <= 0:
            return Interval(math.nan, math.nan, math.nan, 0, confidence)
        a = self.both
        b, c = self.candidate_only, self.production_only
        d = n - a - b - c
        p1, p2 = (a + b) / n, (a + c) / n
        w1, w2 = wilson_interval(a + b, n, confidence), wilson_interval(a + c, n, confidence)
        denom = math.sqrt(max((a + b) * (c + d) * (a + c) * (b + d), 0))
        # Newcombe's continuity-corrected phi (AD - BC less N/2 when above it, 0 in between):
        # uncorrected, a table with no discordant pair and a shared failure (b = c = 0, a > 0)
        # has phi = 1 and a zero-width interval at any n, even n = 2.
        ad_bc = a * d - b * c
        corrected = ad_bc - n / 2 if ad_bc > n / 2 else min(ad_bc, 0)
        phi = corrected / denom if denom > 0 else 0.0
        delta = p1 - p2
        dl = math.sqrt(
            max((p1 - w1.low) ** 2 - 2 * phi * (p1 - w1.low) * (w2.high - p2) + (w2.high - p2) ** 2, 0)
        )
        du = math.sqrt(
            max((w1.high - p1) ** 2 - 2 * phi * (w1.high - p1) * (p2 - w2.low) + (p2 - w2.low) ** 2, 0)
        )
        return Interval(delta, max(-1.0, delta - dl), min(1.0, delta + du), n, confidence)


def paired_binary(candidate: Sequence[bool], production: Sequence[bool]) -> PairedBinary:
    c = np.asarray(candidate, dtype=bool)
    p = np.asarray(production, dtype=bool)
    if c.shape != p.shape:
        raise ValueError(f"paired outcomes need the same seeds: {c.shape} vs {p.shape}")
    return PairedBinary(
        n=int(c.size),
        candidate_only=int(np.sum(c & ~p)),
        production_only=int(np.sum(~c & p)),
        both=int(np.sum(c & p)),
    )


@dataclass(frozen=True)
class RankComparison:
    """Mann-Whitney U of a canary's samples against the baseline's over the same window."""

    p_value: float
    # Probability that a canary sample exceeds a baseline sample (0.5: no difference).
    common_language_effect: float
    median_ratio: float
    n_canary: int
    n_baseline: int

    def describe(self) -> str:
        return (
            f"Mann-Whitney U p = {self.p_value:.3g}, P(canary > baseline) = {self.common_language_effect:.2f}, "
            f"median ratio {self.median_ratio:.2f} (n = {self.n_canary} vs {self.n_baseline})"
        )


def rank_compare(canary: Sequence[float], baseline: Sequence[float]) -> RankComparison:
    """One-sided test that the canary's values are larger (slower, more errors) than the baseline's."""
    from scipy.stats import mannwhitneyu  # scipy.stats costs ~0.4 s at import

    x = np.asarray(canary, dtype=np.float64)
    y = np.asarray(baseline, dtype=np.float64)
    if not x.size or not y.size:
        return RankComparison(1.0, 0.5, math.nan, int(x.size), int(y.size))
    res = mannwhitneyu(x, y, alternative="greater")
    effect = float(res.statistic) / (x.size * y.size)
    med_y = float(np.median(y))
    ratio = float(np.median(x)) / med_y if med_y > 0 else math.inf
    return RankComparison(float(res.pvalue), effect, ratio, int(x.size), int(y.size))


def _z(confidence: float) -> float:
    """Two-sided standard normal quantile (no scipy needed)."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)
