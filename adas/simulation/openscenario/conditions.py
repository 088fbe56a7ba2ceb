"""Conditions and triggers at run time: values, edges, delays.

Each ``Condition`` compiles once into a closure over the bodies it reads (``compile_condition``),
so a step evaluates plain Python floats. ``ConditionRuntime`` adds the standard's edge and delay:

* edges compare the raw value with the previous evaluation's; the first evaluation after the
  owning element (re-)entered standby has no previous value, so an edge never fires on it
  (esmini does the same); ``none`` is the level;
* ``delay`` returns the edge-processed value registered ``delay`` seconds earlier (the latest
  evaluation at or before ``t - delay``).

Rules compare with a 1e-9 tolerance (``greaterThan`` is ``a > b + 1e-9``), as esmini's do. A
measure that is undefined (time to collision while not closing in, headway to an entity
behind) makes the condition false whatever the rule.

A ``Trigger`` is true when any condition group is (all its conditions true). Every condition of
a trigger is evaluated at every step its trigger is live, even when the outcome is already
known, so edges and delays see every step.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from adas.simulation.openscenario.bodies import (
    Body,
    boxes_overlap,
    entity_distance,
    overlapping,
    point_distance,
)
from adas.simulation.openscenario.model import (
    ByEntity,
    CollisionCondition,
    Condition,
    DistanceCondition,
    ParameterCondition,
    Position,
    ReachPositionCondition,
    RelativeDistanceCondition,
    Rule,
    SimulationTimeCondition,
    SpeedCondition,
    StoryboardElementStateCondition,
    TimeHeadwayCondition,
    TimeToCollisionCondition,
    Trigger,
)
from adas.simulation.openscenario.road import StraightRoad

RULE_TOL: Final[float] = 1e-9


class ConditionContext(Protocol):
    """What a condition reads: the bodies, the road and the storyboard's states (the player)."""

    road: StraightRoad

    def body(self, name: str) -> Body: ...

    def bodies(self) -> list[Body]: ...

    def position_pose(self, pos: Position) -> tuple[float, float, float]: ...

    def element_state(self, key: str) -> str: ...

    def transitioned(self, key: str, transition: str) -> bool: ...


def compare(a: float, rule: Rule, b: float) -> bool:
    if rule == "greaterThan":
        return a > b + RULE_TOL
    if rule == "lessThan":
        return a < b - RULE_TOL
    if rule == "greaterOrEqual":
        return a >= b - RULE_TOL
    if rule == "lessOrEqual":
        return a <= b + RULE_TOL
    if rule == "equalTo":
        return abs(a - b) <= RULE_TOL
    return abs(a - b) > RULE_TOL  # notEqualTo


def _compare_defined(a: float | None, rule: Rule, b: float) -> bool:
    return a is not None and compare(a, rule, b)


class ConditionRuntime:
    __slots__ = ("delay", "edge", "fn", "history", "last", "name", "path")

    def __init__(self, cond: Condition, ctx: ConditionContext) -> None:
        self.name = cond.name
        self.path = cond.path
        self.edge = cond.edge
        self.delay = cond.delay
        self.fn = compile_condition(cond, ctx)
        self.last: bool | None = None
        self.history: deque[tuple[float, bool]] = deque()

    def reset(self) -> None:
        self.last = None
        self.history.clear()

    def evaluate(self, t: float) -> bool:
        raw = self.fn(t)
        last = self.last
        self.last = raw
        if self.edge == "none":
            value = raw
        elif last is None:
            value = False
        elif self.edge == "rising":
            value = raw and not last
        elif self.edge == "falling":
            value = last and not raw
        else:
            value = raw != last
        if self.delay <= 0.0:
            return value
        hist = self.history
        hist.append((t, value))
        cutoff = t - self.delay + RULE_TOL
        while len(hist) > 1 and hist[1][0] <= cutoff:
            hist.popleft()
        return hist[0][1] if hist[0][0] <= cutoff else False


class TriggerRuntime:
    __slots__ = ("default", "groups")

    def __init__(self, trigger: Trigger, ctx: ConditionContext, *, default: bool) -> None:
        self.groups = [[ConditionRuntime(c, ctx) for c in group] for group in trigger.groups]
        self.default = default

    def reset(self) -> None:
        for group in self.groups:
            for c in group:
                c.reset()

    def evaluate(self, t: float) -> bool:
        if not self.groups:
            return self.default
        fired = False
        for group in self.groups:
            all_true = True
            for c in group:
                if not c.evaluate(t):
                    all_true = False
            fired = fired or all_true
        return fired


def compile_condition(cond: Condition, ctx: ConditionContext) -> Callable[[float], bool]:
    kind = cond.kind
    if isinstance(kind, SimulationTimeCondition):
        value, rule = kind.value, kind.rule
        return lambda t: compare(t, rule, value)
    if isinstance(kind, StoryboardElementStateCondition):
        key, state = kind.element, kind.state
        if state.endswith("State"):
            return lambda t: ctx.element_state(key) == state
        return lambda t: ctx.transitioned(key, state)
    if isinstance(kind, ParameterCondition):
        constant = _parameter_holds(kind)
        return lambda t: constant
    return _by_entity(kind, ctx)


def _parameter_holds(c: ParameterCondition) -> bool:
    current = c.current
    if isinstance(current, bool):
        a, b = float(current), float(c.value == "true")
    else:
        try:
            a, b = float(current), float(c.value)
        except ValueError:
            if c.rule == "equalTo":
                return str(current) == c.value
            if c.rule == "notEqualTo":
                return str(current) != c.value
            return False
    return compare(a, c.rule, b)


def _by_entity(by: ByEntity, ctx: ConditionContext) -> Callable[[float], bool]:
    bodies = [ctx.body(n) for n in by.triggering]  # bodies live as long as the player: bound once
    measure = _entity_measure(by, ctx)
    if len(bodies) == 1:
        only = bodies[0]
        return lambda t: measure(only)
    if by.rule == "any":
        return lambda t: any(measure(b) for b in bodies)
    return lambda t: all(measure(b) for b in bodies)


def _entity_measure(by: ByEntity, ctx: ConditionContext) -> Callable[[Body], bool]:
    c = by.condition
    road = ctx.road
    if isinstance(c, SpeedCondition):
        if c.direction == "lateral":
            return lambda a: compare(a.lat_speed, c.rule, c.value)
        if c.direction == "vertical":
            return lambda a: compare(0.0, c.rule, c.value)
        if c.direction == "longitudinal":
            return lambda a: compare(a.v, c.rule, c.value)
        return lambda a: compare(abs(a.v), c.rule, c.value)
    if isinstance(c, ReachPositionCondition):

        def reach(a: Body) -> bool:
            px, py, _ = ctx.position_pose(c.position)
            return math.hypot(a.x - px, a.y - py) <= c.tolerance + RULE_TOL

        return reach
    if isinstance(c, DistanceCondition):

        def distance(a: Body) -> bool:
            px, py, _ = ctx.position_pose(c.position)
            d = point_distance(a, px, py, road, c.coordinate_system, c.distance_type, c.freespace)
            return compare(abs(d), c.rule, c.value)

        return distance
    if isinstance(c, RelativeDistanceCondition):
        ref = ctx.body(c.entity)
        cs, kind, free = c.coordinate_system, c.distance_type, c.freespace
        return lambda a: compare(abs(entity_distance(a, ref, road, cs, kind, free)), c.rule, c.value)
    if isinstance(c, TimeHeadwayCondition):
        ref = ctx.body(c.entity)
        return lambda a: _compare_defined(headway(a, ref, road, c), c.rule, c.value)
    if isinstance(c, TimeToCollisionCondition):
        return lambda a: _compare_defined(time_to_collision(a, c, ctx), c.rule, c.value)
    if isinstance(c, CollisionCondition):
        if c.entity is not None:
            other = ctx.body(c.entity)
            return lambda a: a is not other and boxes_overlap(a, other)
        object_type = c.object_type
        everyone = ctx.bodies()
        return lambda a: any(b.object_type == object_type for b in overlapping(everyone, a))
    raise TypeError(f"no measure for {type(c).__name__}")  # the parser only builds the kinds above


def headway(a: Body, b: Body, road: StraightRoad, c: TimeHeadwayCondition) -> float | None:
    """Seconds for ``a`` to cover the distance to ``b``; undefined when ``b`` is behind or ``a`` stands."""
    d = entity_distance(a, b, road, c.coordinate_system, c.distance_type, c.freespace)
    if c.distance_type in ("euclidianDistance", "cartesianDistance"):
        ahead = entity_distance(a, b, road, c.coordinate_system, "longitudinal", False)
        if ahead < 0:
            return None
    if d < 0 or a.v < RULE_TOL:
        return None
    return d / a.v


def time_to_collision(a: Body, c: TimeToCollisionCondition, ctx: ConditionContext) -> float | None:
    """Time until ``a`` reaches the target at the current velocities; undefined unless closing in.

    Longitudinal / lateral: the signed distance along the axis over the closing speed along it;
    euclidean: the distance over the closing speed along the line between the reference points.
    """
    road = ctx.road
    avx, avy = a.vx, a.vy
    if c.target_entity is not None:
        b = ctx.body(c.target_entity)
        bvx, bvy = b.vx, b.vy
        bx, by = b.x, b.y
        d = entity_distance(a, b, road, c.coordinate_system, c.distance_type, c.freespace)
    else:
        assert c.target_position is not None
        bx, by, _ = ctx.position_pose(c.target_position)
        bvx = bvy = 0.0
        d = point_distance(a, bx, by, road, c.coordinate_system, c.distance_type, c.freespace)
    rvx, rvy = avx - bvx, avy - bvy
    if c.distance_type in ("euclidianDistance", "cartesianDistance"):
        rx, ry = bx - a.x, by - a.y
        norm = math.hypot(rx, ry)
        if norm < RULE_TOL:
            return None
        closing = (rvx * rx + rvy * ry) / norm
    else:
        if c.coordinate_system == "entity":
            fx, fy = math.cos(a.h), math.sin(a.h)
        else:
            fx, fy = road.cos_h * a.direction, road.sin_h * a.direction
        ax, ay = (fx, fy) if c.distance_type == "longitudinal" else (-fy, fx)
        closing = (rvx * ax + rvy * ay) * (1.0 if d >= 0 else -1.0)
        d = abs(d)
    if d < RULE_TOL or closing < RULE_TOL:
        return None
    return d / closing
