"""``ParameterValueDistribution`` files -> concrete parameter sets (the points of a sweep).

Deterministic distributions are expanded as the cross product of their parts, in file order:
a ``DistributionSet`` gives its elements, a ``DistributionRange`` the values from the lower limit
in steps of ``stepWidth`` up to the upper limit (inclusive, to 1e-9), a multi-parameter
``ValueSetDistribution`` its parameter value sets. Stochastic distributions draw
``numberOfTestRuns`` points from a ``numpy`` generator seeded with the file's ``randomSeed`` (or
the caller's seed: without either the sweep is refused, never drawn unseeded): uniform, normal
and log-normal (with an optional range: redrawn until inside it), Poisson, histogram and
probability sets. ``UserDefinedDistribution`` is outside the subset and reported.

Domain code: no dagster import.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from lxml import etree

from adas.simulation.openscenario.findings import Finding
from adas.simulation.scenario_schema import validate_file

_MAX_REDRAWS: Final[int] = 10_000


class DistributionError(ValueError):
    """A parameter distribution that cannot be expanded; the message names the element."""


Fail = Callable[[etree._Element, str], DistributionError]


@dataclass(frozen=True, slots=True)
class Sweep:
    scenario_file: Path  # the ScenarioFile it applies to, resolved against the distribution's folder
    points: tuple[dict[str, str], ...]
    seed: int | None  # the seed a stochastic distribution was drawn with


def read_distribution(path: str | Path, *, seed: int | None = None) -> Sweep:
    """The concrete parameter sets of a ``ParameterValueDistribution`` file (validated against the XSD first:
    ``ScenarioValidationError`` when it does not)."""
    path = Path(path)
    validate_file(path)
    doc = etree.parse(str(path))
    pvd = doc.getroot().find("ParameterValueDistribution")
    if pvd is None:
        raise DistributionError(f"{path.name}: no ParameterValueDistribution")
    scenario_el = pvd.find("ScenarioFile")
    if scenario_el is None:
        raise DistributionError(f"{path.name}: ParameterValueDistribution has no ScenarioFile")
    scenario_file = (path.parent / scenario_el.get("filepath", "")).resolve()

    def fail(el: etree._Element, why: str) -> DistributionError:
        return DistributionError(str(Finding(f"{path.name}:{doc.getpath(el)}", el.sourceline, why)))

    det = pvd.find("Deterministic")
    sto = pvd.find("Stochastic")
    if det is not None:
        return Sweep(scenario_file, tuple(_deterministic(det, fail)), None)
    if sto is not None:
        file_seed = sto.get("randomSeed")
        used = _seed(float(file_seed)) if file_seed is not None else seed
        if used is None:
            raise fail(sto, "a stochastic distribution without randomSeed needs a seed from the caller")
        return Sweep(scenario_file, tuple(_stochastic(sto, np.random.default_rng(used), fail)), used)
    raise fail(pvd, "neither Deterministic nor Stochastic")


def _deterministic(det: etree._Element, fail: Fail) -> list[dict[str, str]]:
    axes: list[list[dict[str, str]]] = []
    for part in det:
        if not isinstance(part.tag, str):
            continue
        if part.tag == "DeterministicSingleParameterDistribution":
            name = part.get("parameterName", "").removeprefix("$")
            axes.append([{name: v} for v in _single_values(part, fail)])
        elif part.tag == "DeterministicMultiParameterDistribution":
            sets = []
            for vs in part.findall("ValueSetDistribution/ParameterValueSet"):
                sets.append(
                    {a.get("parameterRef", ""): a.get("value", "") for a in vs.findall("ParameterAssignment")}
                )
            if not sets:
                raise fail(part, "a multi-parameter distribution without ParameterValueSet")
            axes.append(sets)
        else:
            raise fail(part, f"{part.tag} is outside the supported subset")
    out = []
    for combo in itertools.product(*axes):
        merged: dict[str, str] = {}
        for p in combo:
            merged.update(p)
        out.append(merged)
    return out


def _single_values(part: etree._Element, fail: Fail) -> list[str]:
    dset = part.find("DistributionSet")
    if dset is not None:
        return [e.get("value", "") for e in dset.findall("Element")]
    drange = part.find("DistributionRange")
    if drange is not None:
        step = float(drange.get("stepWidth", "0"))
        rng = drange.find("Range")
        if rng is None or step <= 0:
            raise fail(drange, "a DistributionRange needs a Range and a positive stepWidth")
        lo, hi = float(rng.get("lowerLimit", "0")), float(rng.get("upperLimit", "0"))
        n = math.floor((hi - lo) / step + 1e-9) + 1
        return [_fmt(lo + k * step) for k in range(max(n, 0))]
    other = next((c for c in part if isinstance(c.tag, str)), part)
    raise fail(other, f"{other.tag} is outside the supported subset")


def _stochastic(sto: etree._Element, rng: np.random.Generator, fail: Fail) -> list[dict[str, str]]:
    runs = int(float(sto.get("numberOfTestRuns", "0")))
    draws: dict[str, list[str]] = {}
    for dist in sto.findall("StochasticDistribution"):
        name = dist.get("parameterName", "").removeprefix("$")
        kind = next((c for c in dist if isinstance(c.tag, str)), None)
        if kind is None:
            raise fail(dist, "empty StochasticDistribution")
        draws[name] = [_draw(kind, rng, fail) for _ in range(runs)]
    return [{name: values[k] for name, values in draws.items()} for k in range(runs)]


def _range(el: etree._Element) -> tuple[float, float] | None:
    r = el.find("Range")
    return None if r is None else (float(r.get("lowerLimit", "0")), float(r.get("upperLimit", "0")))


def _draw(kind: etree._Element, rng: np.random.Generator, fail: Fail) -> str:
    tag = kind.tag
    if tag == "ProbabilityDistributionSet":
        elements = kind.findall("Element")
        weights = np.asarray([float(e.get("weight", "0")) for e in elements])
        if not elements or weights.sum() <= 0:
            raise fail(kind, "a ProbabilityDistributionSet needs elements with positive total weight")
        return elements[int(rng.choice(len(elements), p=weights / weights.sum()))].get("value", "")
    if tag == "Histogram":
        bins = kind.findall("Bin")
        weights = np.asarray([float(b.get("weight", "0")) for b in bins])
        if not bins or weights.sum() <= 0:
            raise fail(kind, "a Histogram needs bins with positive total weight")
        lo, hi = _range(bins[int(rng.choice(len(bins), p=weights / weights.sum()))]) or (0.0, 0.0)
        return _fmt(float(rng.uniform(lo, hi)))
    if tag == "UniformDistribution":
        bounds = _range(kind)
        if bounds is None:
            raise fail(kind, "a UniformDistribution needs a Range")
        return _fmt(float(rng.uniform(*bounds)))
    if tag in ("NormalDistribution", "LogNormalDistribution", "PoissonDistribution"):
        bounds = _range(kind)
        for _ in range(_MAX_REDRAWS):
            if tag == "NormalDistribution":
                mean, var = float(kind.get("expectedValue", "0")), float(kind.get("variance", "0"))
                value = float(rng.normal(mean, math.sqrt(var)))
            elif tag == "LogNormalDistribution":
                mu, var = float(kind.get("expectedValue", "0")), float(kind.get("variance", "0"))
                value = float(rng.lognormal(mu, math.sqrt(var)))
            else:
                value = float(rng.poisson(float(kind.get("expectedValue", "0"))))
            if bounds is None or bounds[0] <= value <= bounds[1]:
                return _fmt(value)
        raise fail(kind, f"no draw fell inside the range after {_MAX_REDRAWS} tries")
    raise fail(kind, f"{tag} is outside the supported subset")


def _seed(value: float) -> int:
    """A generator seed from the schema's double: the integer itself, else the double's 64 bits (so
    1.234 and 1.0 draw different sweeps)."""
    if value.is_integer():
        return int(value)
    return int(np.float64(value).view(np.uint64))


def _fmt(v: float) -> str:
    return repr(round(v, 12)) if v != int(v) else str(int(v)) if abs(v) < 1e15 else repr(v)
