"""Private actions at run time: how each one moves its entity (or, for the ego, what it asks for).

A run owns one or two of its entity's domains: ``longitudinal`` (speed), ``lateral`` (lane
change, lane offset) or both (a timed trajectory). Starting a run on an occupied domain stops
the run that held it (the standard's conflict rule for actions on one entity).

Played entities follow the road: they advance along ``s`` in their driving direction at the
longitudinal run's speed (constant without one) and hold their lateral position ``t`` unless a
lateral run moves it; the heading follows the motion. A timed ``FollowTrajectoryAction`` places
the entity on the polyline at the time each vertex gives (position mode); an untimed one moves
it along the polyline at its own speed.

Domain code: no dagster import.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Protocol

from adas.simulation.openscenario.bodies import Body
from adas.simulation.openscenario.dynamics import EPS, LateralProfile, SpeedProfile
from adas.simulation.openscenario.model import (
    AbsoluteTargetLane,
    AbsoluteTargetLaneOffset,
    AbsoluteTargetSpeed,
    FollowTrajectoryAction,
    LaneChangeAction,
    LaneOffsetAction,
    Position,
    SpeedAction,
)
from adas.simulation.openscenario.road import StraightRoad
from adas.simulation.openscenario.storyboard import Element


class PlayerError(RuntimeError):
    """A scenario that cannot go on at run time (e.g. a relative lane that does not exist); names the element."""


class RunContext(Protocol):
    road: StraightRoad

    def body(self, name: str) -> Body: ...

    def position_pose(self, pos: Position) -> tuple[float, float, float]: ...


class Run:
    """One action on one entity. ``element`` is None for an Init action (not a storyboard element)."""

    __slots__ = ("body", "element", "path")
    longitudinal = False
    lateral = False

    def __init__(self, element: Element | None, body: Body, path: str) -> None:
        self.element = element
        self.body = body
        self.path = path

    def retarget(self) -> None:
        """A continuous action re-aims at its moving reference; called for every run before a step
        moves anything, so every run reads the same (previous) state whatever the entity order."""


class SpeedRun(Run):
    __slots__ = ("action", "ctx", "profile")
    longitudinal = True

    def __init__(
        self, element: Element | None, body: Body, path: str, action: SpeedAction, t0: float, ctx: RunContext
    ) -> None:
        super().__init__(element, body, path)
        self.action = action
        self.ctx = ctx
        self.profile = SpeedProfile.start(action.dynamics, t0, body.v, self.target())

    @property
    def continuous(self) -> bool:
        target = self.action.target
        return not isinstance(target, AbsoluteTargetSpeed) and target.continuous

    def target(self) -> float:
        target = self.action.target
        if isinstance(target, AbsoluteTargetSpeed):
            return target.value
        ref = self.ctx.body(target.entity).v
        return ref + target.value if target.value_type == "delta" else ref * target.value

    def retarget(self) -> None:
        if self.continuous:
            self.profile.v1 = self.target()

    def advance(self, t_prev: float, t: float) -> tuple[float, float]:
        """(distance travelled along the heading from t_prev to t, speed at t)."""
        if self.continuous:  # the target moves: trapezoid over the step
            v = self.profile.speed(t)
            return 0.5 * (self.body.v + v) * (t - t_prev), v
        return self.profile.distance(t_prev, t), self.profile.speed(t)

    def done(self, t: float) -> bool:
        return not self.continuous and t >= self.profile.end_time() - EPS


class LateralRun(Run):
    __slots__ = ("continuous_target", "lane_id", "profile")
    lateral = True

    def __init__(self, element: Element | None, body: Body, path: str, lane_id: int | None) -> None:
        super().__init__(element, body, path)
        self.lane_id = lane_id  # the lane the run ends in (lane change), for the ego's intent
        self.profile: LateralProfile
        self.continuous_target: bool = False

    def value(self, t: float) -> float:
        return self.profile.value(t, self.body.odometer)

    def done(self, t: float) -> bool:
        return not self.continuous_target and self.profile.done(t, self.body.odometer)


class LaneChangeRun(LateralRun):
    __slots__ = ()

    def __init__(
        self,
        element: Element | None,
        body: Body,
        path: str,
        action: LaneChangeAction,
        t0: float,
        ctx: RunContext,
    ) -> None:
        road = ctx.road
        target = action.target
        if isinstance(target, AbsoluteTargetLane):
            lane = road.lane(target.lane_id)
        else:
            ref = ctx.body(target.entity)
            ref_lane = road.lane_at(ref.t)
            shifted = road.shifted_lane(ref_lane.lane_id, target.value) if ref_lane else None
            if shifted is None:
                raise PlayerError(
                    f"{path}: no lane {target.value:+d} from {target.entity}'s lane "
                    f"{ref_lane.lane_id if ref_lane else '(off road)'} on road {road.road_id}"
                )
            lane = shifted
        super().__init__(element, body, path, lane.lane_id)
        goal = lane.center + lane.direction * action.target_lane_offset
        self.profile = LateralProfile.start(action.dynamics, t0, body.odometer, body.t, goal)


class LaneOffsetRun(LateralRun):
    __slots__ = ("action", "ctx", "lane_center", "lane_direction")

    def __init__(
        self,
        element: Element | None,
        body: Body,
        path: str,
        action: LaneOffsetAction,
        t0: float,
        ctx: RunContext,
    ) -> None:
        lane = ctx.road.lane_at(body.t)
        if lane is None:
            raise PlayerError(f"{path}: {body.name} is on no lane")
        super().__init__(element, body, path, None)
        self.action = action
        self.ctx = ctx
        self.lane_center = lane.center
        self.lane_direction = lane.direction
        self.continuous_target = action.continuous
        self.profile = LateralProfile.by_lateral_acceleration(
            action.shape, action.max_lateral_acc, t0, body.odometer, body.t, self._goal()
        )

    def _goal(self) -> float:
        target = self.action.target
        if isinstance(target, AbsoluteTargetLaneOffset):
            offset = target.value
        else:
            ref = self.ctx.body(target.entity)
            ref_lane = self.ctx.road.lane_at(ref.t)
            ref_offset = (ref.t - ref_lane.center) * ref_lane.direction if ref_lane else 0.0
            offset = ref_offset + target.value
        return self.lane_center + self.lane_direction * offset

    def retarget(self) -> None:
        if self.continuous_target:
            self.profile.b = self._goal()


class TrajectoryRun(Run):
    """A polyline in position mode: timed (vertex times mapped to simulation time) or along the path."""

    __slots__ = ("arc", "cum", "headings", "seg_h", "seg_v", "speed", "times", "xs", "ys")

    def __init__(
        self,
        element: Element | None,
        body: Body,
        path: str,
        action: FollowTrajectoryAction,
        t0: float,
        ctx: RunContext,
    ) -> None:
        super().__init__(element, body, path)
        poses = [ctx.position_pose(v.position) for v in action.vertices]
        self.xs = [p[0] for p in poses]
        self.ys = [p[1] for p in poses]
        self.headings = [p[2] for p in poses]
        self.speed = 0.0
        self.times: list[float] | None = None
        n = len(poses)
        seg_h = []  # per segment: its direction (the start vertex's heading on a zero-length one)
        for k in range(n - 1):
            dx, dy = self.xs[k + 1] - self.xs[k], self.ys[k + 1] - self.ys[k]
            seg_h.append(math.atan2(dy, dx) if math.hypot(dx, dy) > 1e-9 else self.headings[k])
        self.seg_h = seg_h
        timing = action.timing
        if timing is not None:
            base = t0 if timing.domain == "relative" else 0.0
            times = [base + float(v.time) * timing.scale + timing.offset for v in action.vertices]  # type: ignore[arg-type]
            if any(b < a for a, b in itertools.pairwise(times)):
                raise PlayerError(f"{path}: vertex times decrease along trajectory {action.trajectory_name}")
            self.times = times
            self.seg_v = [
                ((self.xs[k + 1] - self.xs[k]) / dt, (self.ys[k + 1] - self.ys[k]) / dt)
                if dt > 0
                else (0.0, 0.0)
                for k in range(n - 1)
                for dt in (times[k + 1] - times[k],)
            ]
        cum = [0.0]
        for k in range(1, len(poses)):
            cum.append(cum[-1] + math.hypot(self.xs[k] - self.xs[k - 1], self.ys[k] - self.ys[k - 1]))
        self.cum = cum
        self.arc = min(action.initial_distance_offset, cum[-1])

    @property
    def timed(self) -> bool:
        return self.times is not None

    @property
    def longitudinal(self) -> bool:  # type: ignore[override]
        return self.timed

    @property
    def lateral(self) -> bool:  # type: ignore[override]
        return True

    def pose_at_time(self, t: float) -> tuple[float, float, float, float, float]:
        """(x, y, heading, vx, vy) on the timed polyline at simulation time ``t``."""
        times = self.times
        assert times is not None
        xs, ys = self.xs, self.ys
        if t <= times[0]:
            return xs[0], ys[0], self._heading(0), 0.0, 0.0
        if t >= times[-1]:
            k = len(times) - 1
            return xs[k], ys[k], self._heading(k - 1), *self._segment_velocity(k - 1)
        k = bisect.bisect_right(times, t) - 1
        while times[k + 1] <= times[k]:  # a zero-length time step: jump to the next vertex
            k += 1
        u = (t - times[k]) / (times[k + 1] - times[k])
        vx, vy = self._segment_velocity(k)
        return xs[k] + u * (xs[k + 1] - xs[k]), ys[k] + u * (ys[k + 1] - ys[k]), self._heading(k), vx, vy

    def pose_at_arc(self, arc: float) -> tuple[float, float, float]:
        cum, xs, ys = self.cum, self.xs, self.ys
        if arc >= cum[-1]:
            k = len(cum) - 1
            return xs[k], ys[k], self._heading(k - 1)
        k = max(bisect.bisect_right(cum, arc) - 1, 0)
        seg = cum[k + 1] - cum[k]
        u = (arc - cum[k]) / seg if seg > 0 else 0.0
        return xs[k] + u * (xs[k + 1] - xs[k]), ys[k] + u * (ys[k + 1] - ys[k]), self._heading(k)

    def _segment_velocity(self, k: int) -> tuple[float, float]:
        return self.seg_v[k]

    def _heading(self, k: int) -> float:
        return self.seg_h[min(max(k, 0), len(self.seg_h) - 1)]

    def done(self, t: float) -> bool:
        if self.times is not None:
            return t >= self.times[-1] - EPS
        return self.arc >= self.cum[-1] - 1e-9
