"""Transition shapes and the profiles the actions follow over time (or distance).

A transition from ``a`` to ``b`` follows ``a + (b - a) * f(p)`` with progress ``p`` in [0, 1] and
the standard's shapes: ``linear`` f(p) = p, ``cubic`` f(p) = 3p^2 - 2p^3 (zero slope at both
ends), ``sinusoidal`` f(p) = (1 - cos(pi p)) / 2, ``step`` (jump at once). The dimension sets how
progress advances:

* ``time``: over ``value`` seconds;
* ``rate``: at ``value`` units per second on average, i.e. over ``|b - a| / value`` seconds
  (exact for ``linear``; ``cubic`` and ``sinusoidal`` peak above the average rate);
* ``distance``: over ``value`` metres travelled. For a speed transition this is a duration of
  ``2 d / (v0 + v1)``: every shape is symmetric (mean of f is 1/2), so the entity travels
  exactly ``d`` during it. For a lateral transition progress is the distance travelled since the
  start divided by ``d``.

``SpeedProfile.distance`` integrates the speed exactly (closed-form integrals of the shapes), so
a played entity's position does not depend on the step size.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from adas.simulation.openscenario.model import Shape, TransitionDynamics

EPS: Final[float] = 1e-9


def shape_value(shape: Shape, p: float) -> float:
    """f(p) for p in [0, 1] (clipped outside)."""
    if p >= 1.0 or shape == "step":
        return 1.0
    if p <= 0.0:
        return 0.0
    if shape == "linear":
        return p
    if shape == "cubic":
        return p * p * (3.0 - 2.0 * p)
    return 0.5 * (1.0 - math.cos(math.pi * p))


def shape_integral(shape: Shape, p: float) -> float:
    """The integral of f from 0 to p (p clipped to [0, 1]); 1/2 at p = 1 for every shape."""
    if p <= 0.0:
        return 0.0
    q = min(p, 1.0)
    if shape == "step":
        value = q
    elif shape == "linear":
        value = 0.5 * q * q
    elif shape == "cubic":
        value = q**3 - 0.5 * q**4
    else:
        value = 0.5 * (q - math.sin(math.pi * q) / math.pi)
    return value + max(p - 1.0, 0.0)


@dataclass(slots=True)
class SpeedProfile:
    """Speed from ``v0`` at ``t0`` to ``v1`` over ``duration`` seconds (0: a step)."""

    t0: float
    v0: float
    v1: float
    duration: float
    shape: Shape

    @classmethod
    def start(cls, dyn: TransitionDynamics, t0: float, v0: float, v1: float) -> SpeedProfile:
        dv = abs(v1 - v0)
        if dyn.shape == "step" or dv < EPS:
            duration = 0.0
        elif dyn.dimension == "time":
            duration = dyn.value
        elif dyn.dimension == "rate":
            duration = dv / dyn.value if dyn.value > 0 else 0.0
        else:  # distance
            mean = 0.5 * (abs(v0) + abs(v1))
            duration = dyn.value / mean if mean > EPS else 0.0
        return cls(t0, v0, v1, max(duration, 0.0), dyn.shape)

    def end_time(self) -> float:
        return self.t0 + self.duration

    def speed(self, t: float) -> float:
        if self.duration <= 0.0 or t >= self.t0 + self.duration - EPS:
            return self.v1
        if t <= self.t0:
            return self.v0
        return self.v0 + (self.v1 - self.v0) * shape_value(self.shape, (t - self.t0) / self.duration)

    def distance(self, ta: float, tb: float) -> float:
        """Signed distance travelled along the heading between ``ta`` and ``tb`` (ta <= tb)."""
        return self._position(tb) - self._position(ta)

    def _position(self, t: float) -> float:
        if t <= self.t0:
            return self.v0 * (t - self.t0)
        if self.duration <= 0.0:
            return self.v1 * (t - self.t0)
        p = (t - self.t0) / self.duration
        return self.v0 * (t - self.t0) + (self.v1 - self.v0) * self.duration * shape_integral(self.shape, p)


@dataclass(slots=True)
class LateralProfile:
    """Lateral position (road t) from ``a`` to ``b``: over ``duration`` seconds, or ``length`` metres
    travelled from odometer ``odo0`` (exactly one of them is set; both 0 for a step)."""

    t0: float
    odo0: float
    a: float
    b: float
    duration: float
    length: float
    shape: Shape

    @classmethod
    def start(cls, dyn: TransitionDynamics, t0: float, odo0: float, a: float, b: float) -> LateralProfile:
        if dyn.shape == "step" or abs(b - a) < EPS:
            return cls(t0, odo0, a, b, 0.0, 0.0, dyn.shape)
        if dyn.dimension == "time":
            return cls(t0, odo0, a, b, max(dyn.value, 0.0), 0.0, dyn.shape)
        if dyn.dimension == "rate":
            return cls(t0, odo0, a, b, abs(b - a) / dyn.value if dyn.value > 0 else 0.0, 0.0, dyn.shape)
        return cls(t0, odo0, a, b, 0.0, max(dyn.value, 0.0), dyn.shape)

    @classmethod
    def by_lateral_acceleration(
        cls, shape: Shape, max_acc: float, t0: float, odo0: float, a: float, b: float
    ) -> LateralProfile:
        """A lane-offset transition whose peak lateral acceleration is ``max_acc``: cubic peaks at
        6 d / T^2, sinusoidal at pi^2 d / (2 T^2); linear (unbounded at its ends) takes the cubic's time."""
        d = abs(b - a)
        if shape == "step" or d < EPS or max_acc <= 0:
            return cls(t0, odo0, a, b, 0.0, 0.0, shape)
        duration = (
            math.pi * math.sqrt(d / (2.0 * max_acc))
            if shape == "sinusoidal"
            else math.sqrt(6.0 * d / max_acc)
        )
        return cls(t0, odo0, a, b, duration, 0.0, shape)

    @property
    def is_step(self) -> bool:
        return self.duration <= 0.0 and self.length <= 0.0

    def progress(self, t: float, odometer: float) -> float:
        if self.length > 0.0:
            return (odometer - self.odo0) / self.length
        if self.duration > 0.0:
            return (t - self.t0) / self.duration
        return 1.0

    def value(self, t: float, odometer: float) -> float:
        return self.a + (self.b - self.a) * shape_value(self.shape, self.progress(t, odometer))

    def done(self, t: float, odometer: float) -> bool:
        return self.progress(t, odometer) >= 1.0 - EPS
