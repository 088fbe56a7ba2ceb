"""The OpenSCENARIO player: plays a parsed scenario step by step on the straight road.

The player owns every entity except the ego. Each ``step`` it

1. takes the ego's pose from the caller's world (the ego is the system under test: it is placed
   by the file's ``Init`` and then driven by the caller, never moved by the storyboard);
2. advances every other entity by its running actions to the new time (``actions``);
3. tells the storyboard which actions reached their end, then runs one storyboard pass at the new
   time (``storyboard``: triggers see the world at that time).

Actions the storyboard gives the ego are not applied to it: they become ``EgoIntent`` (the
speed, lane, lateral position or trajectory pose asked for now), which the caller's controller
turns into its route or speed; an ego action completes when its nominal profile does (its
duration, or the distance the ego travelled). A storyboard ``TeleportAction`` on the ego is
refused when the player is built (``NotExecutableError``), like any element outside the subset.

Interface for a world (highway-env in the next increment, ``kinematic.KinematicEgo`` here)::

    player = Player(scenario, step_s=0.2, ego="Ego")
    world.place_ego(player.ego_start)               # the file's Init pose and speed
    while not player.finished and player.time < horizon:
        world.drive_ego(player.ego_intent)          # the controller's intent for the next step
        world.step(player.step_s)
        player.step(world.ego_state())              # actors advance, triggers fire
        world.place_actors(player.poses())          # highway-env: road.to_highway(...)

Cost per step: plain float arithmetic per entity and per live condition (no numpy on the hot
path except collision and freespace-euclidean geometry); ``scripts/benchmark_openscenario.py``
prints the figure.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from adas.simulation.openscenario.actions import (
    LaneChangeRun,
    LaneOffsetRun,
    LateralRun,
    PlayerError,
    Run,
    SpeedRun,
    TrajectoryRun,
)
from adas.simulation.openscenario.bodies import Body
from adas.simulation.openscenario.model import (
    ActDef,
    ActionKind,
    Condition,
    EnvironmentAction,
    FollowTrajectoryAction,
    LaneChangeAction,
    LaneOffsetAction,
    LanePosition,
    Position,
    RelativeLanePosition,
    RelativeObjectPosition,
    RelativeWorldPosition,
    RenderConditions,
    RoadPosition,
    Scenario,
    SpeedAction,
    StoryboardElementStateCondition,
    TeleportAction,
    Trigger,
    WorldPosition,
)
from adas.simulation.openscenario.road import StraightRoad, platform_road
from adas.simulation.openscenario.storyboard import Element, Storyboard, Transition

__all__ = ["EgoIntent", "EgoState", "EntityPose", "NotExecutableError", "Player", "PlayerError"]


class NotExecutableError(ValueError):
    """The scenario uses elements outside the supported subset (or is invalid); the message lists them."""


@dataclass(frozen=True, slots=True)
class EgoState:
    """The ego's pose and speed in the OpenSCENARIO world frame, as the caller's world measures it."""

    x: float
    y: float
    h: float
    v: float


@dataclass(frozen=True, slots=True)
class EntityPose:
    name: str
    x: float  # reference point (OpenSCENARIO world frame)
    y: float
    h: float
    v: float
    length: float
    width: float
    center_x: float  # bounding-box centre, ahead of / left of the reference point
    center_y: float
    is_ego: bool

    @property
    def box_center(self) -> tuple[float, float]:
        """The bounding box's centre in the world frame (what a renderer draws and a sensor sees)."""
        c, s = math.cos(self.h), math.sin(self.h)
        return self.x + self.center_x * c - self.center_y * s, self.y + self.center_x * s + self.center_y * c


@dataclass(slots=True)
class EgoIntent:
    """What the storyboard asks of the ego now (None: nothing asked). Set values persist after their
    action ends (a speed asked for stays the set speed) except ``pose``, which ends with its trajectory."""

    speed: float | None = None  # the speed asked for at this time
    target_speed: float | None = None  # the speed the running transition ends at
    lane_id: int | None = None  # the lane a lane change ends in
    lateral: float | None = None  # the lateral road position (t) asked for at this time
    pose: tuple[float, float, float] | None = None  # (x, y, heading) on a trajectory at this time
    actions: tuple[str, ...] = ()  # keys of the storyboard actions asking


class Player:
    def __init__(self, scenario: Scenario, *, step_s: float = 0.2, ego: str | None = "Ego") -> None:
        if not scenario.executable:
            raise NotExecutableError(f"{scenario.path} is not executable: {scenario.reason}")
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, got {step_s}")
        names = [e.name for e in scenario.entities]
        if ego is not None and ego not in names:
            raise ValueError(f"no entity named {ego!r} to be the ego (entities: {', '.join(names)})")
        refused = list(_ego_teleports(scenario, ego))
        if refused:
            raise NotExecutableError(
                f"{scenario.path} is not executable: "
                + "; ".join(
                    f"{p}: a storyboard TeleportAction would move the ego {ego}, the system under test"
                    for p in refused
                )
            )
        self.scenario = scenario
        self.step_s = float(step_s)
        self.road: StraightRoad = scenario.road or platform_road()
        self.ego_name = ego
        self._bodies = [Body(k, spec, spec.name == ego) for k, spec in enumerate(scenario.entities)]
        self._by_name = {b.name: b for b in self._bodies}
        self._actors = [b for b in self._bodies if not b.is_ego]
        self._ego = self._by_name[ego] if ego is not None else None
        self._long: list[Run | None] = [None] * len(self._bodies)
        self._lat: list[LateralRun | TrajectoryRun | None] = [None] * len(self._bodies)
        self._runs_of: dict[Element, list[Run]] = {}
        self.conditions: RenderConditions | None = None
        self.ego_intent = EgoIntent()
        self.k = 0
        self.time = 0.0
        self.storyboard = Storyboard(scenario.stories, scenario.stop, self, self)
        self.storyboard.needs_snapshot = any(
            isinstance(c.kind, StoryboardElementStateCondition) and c.kind.state.endswith("State")
            for c in _conditions(scenario)
        )
        self._init()
        self.ego_start = self._ego_state() if self._ego is not None else None
        self.storyboard.evaluate(0.0)
        self._refresh_intent(0.0)

    # -- the step -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once the storyboard's stop trigger fired."""
        return self.storyboard.finished

    @property
    def log(self) -> list[Transition]:
        return self.storyboard.log

    def step(self, ego: EgoState | None = None) -> None:
        """Advance to ``time + step_s``: the ego's new state (required when there is an ego), the actors, a pass."""
        if self.finished:
            return
        t_prev = self.time
        self.k += 1
        t = self.k * self.step_s
        dt = t - t_prev
        for runs in (self._long, self._lat):
            for run in runs:
                if run is not None:
                    run.retarget()
        if self._ego is not None:
            if ego is None:
                raise ValueError("this player has an ego: step() needs its state from the caller's world")
            self._set_ego(ego, dt)
        done: list[Run] = []
        for b in self._actors:
            self._advance(b, t_prev, t, dt, done)
        self.time = t
        if self._ego is not None:
            self._advance_ego_runs(t, done)
        for run in done:
            self._finish(run, t)
        self.storyboard.evaluate(t)
        self._refresh_intent(t)

    def _advance(self, b: Body, t_prev: float, t: float, dt: float, done: list[Run]) -> None:
        i = b.index
        lat = self._lat[i]
        if isinstance(lat, TrajectoryRun) and lat.timed:
            x, y, h, vx, vy = lat.pose_at_time(t)
            moved = math.hypot(x - b.x, y - b.y)
            t_lat_prev = b.t
            b.set_pose(self.road, x, y, h)
            b.odometer += moved
            b.vx, b.vy = vx, vy
            b.v = math.hypot(vx, vy)
            b.lat_speed = (b.t - t_lat_prev) / dt
            if lat.done(t):
                done.append(lat)
            return
        long = self._long[i]
        if long is not None:
            assert isinstance(long, SpeedRun)
            ds, v = long.advance(t_prev, t)
            if long.done(t):
                done.append(long)
        else:
            ds, v = b.v * dt, b.v
        b.v = v
        b.odometer += abs(ds)
        road = self.road
        if isinstance(lat, TrajectoryRun):  # along the path at the entity's own speed
            lat.arc += ds
            x, y, h = lat.pose_at_arc(lat.arc)
            t_lat_prev = b.t
            ox, oy = b.x, b.y
            b.set_pose(road, x, y, h)
            beyond = lat.arc - lat.cum[-1]
            if beyond > 0:  # the path ended during the step: the rest of the step is along the road
                b.s += b.direction * beyond
                b.x, b.y = road.to_world(b.s, b.t)
            b.lat_speed = (b.t - t_lat_prev) / dt
            b.vx, b.vy = (x - ox) / dt, (y - oy) / dt
            if lat.done(t):
                done.append(lat)
            return
        b.s += b.direction * ds
        if lat is not None:
            new_t = lat.value(t)
            b.lat_speed = (new_t - b.t) / dt
            b.t = new_t
            if lat.done(t):
                done.append(lat)
        else:
            b.lat_speed = 0.0
        along = b.direction * v
        if abs(along) > 1e-9 or abs(b.lat_speed) > 1e-9:  # a standing entity keeps its heading
            b.h = road.heading + math.atan2(b.lat_speed, along)
        c, s = road.cos_h, road.sin_h
        b.vx, b.vy = along * c - b.lat_speed * s, along * s + b.lat_speed * c
        b.x, b.y = road.to_world(b.s, b.t)

    def _set_ego(self, ego: EgoState, dt: float) -> None:
        b = self._ego
        assert b is not None
        ox, oy, ot = b.x, b.y, b.t
        b.set_pose(self.road, ego.x, ego.y, ego.h)
        b.v = ego.v
        b.odometer += math.hypot(ego.x - ox, ego.y - oy)
        b.lat_speed = (b.t - ot) / dt if dt > 0 else 0.0
        b.vx, b.vy = ego.v * math.cos(ego.h), ego.v * math.sin(ego.h)

    def _advance_ego_runs(self, t: float, done: list[Run]) -> None:
        assert self._ego is not None
        i = self._ego.index
        for run in {id(r): r for r in (self._long[i], self._lat[i]) if r is not None}.values():
            if run.done(t):
                done.append(run)

    def _finish(self, run: Run, t: float) -> None:
        self._release(run)
        if run.body.is_ego:  # what a completed ego action asked for stays asked for
            if isinstance(run, SpeedRun):
                self.ego_intent.speed = self.ego_intent.target_speed = run.profile.v1
            elif isinstance(run, LateralRun):
                self.ego_intent.lateral = run.profile.b
        if run.element is None:
            return
        runs = self._runs_of.get(run.element)
        if runs is not None and run in runs:
            runs.remove(run)
            if not runs:
                del self._runs_of[run.element]
                self.storyboard.action_done(run.element, t)

    def _release(self, run: Run) -> None:
        i = run.body.index
        if self._long[i] is run:
            self._long[i] = None
        if self._lat[i] is run:
            self._lat[i] = None

    # -- the action host (called by the storyboard) --------------------------------------------

    def start_action(self, element: Element, t: float) -> bool:
        """Start a storyboard action on its actors (or globally); True when it completed at once."""
        assert element.action is not None
        action = element.action.action
        actors = _actors_of(element)
        if isinstance(action, EnvironmentAction):
            self.conditions = action.conditions
            return True
        runs = [
            r
            for name in actors
            if (r := self._start_private(element, self._by_name[name], action, t)) is not None
        ]
        if not runs:
            return True
        self._runs_of[element] = runs
        return False

    def stop_action(self, element: Element) -> None:
        for run in self._runs_of.pop(element, []):
            self._release(run)

    def _start_private(self, element: Element | None, b: Body, action: ActionKind, t: float) -> Run | None:
        path = element.path if element is not None else "Init"
        if isinstance(action, TeleportAction):
            x, y, h = self.position_pose(action.position)
            b.set_pose(self.road, x, y, h)
            b.placed = True
            self._take(b, lateral=True, longitudinal=False, t=t)
            return None
        run: Run
        if isinstance(action, SpeedAction):
            run = SpeedRun(element, b, path, action, t, self)
            if run.profile.duration <= 0.0 and not b.is_ego:
                b.v = run.profile.v1  # a step: the new speed holds from now
                if not run.continuous:
                    self._take(b, lateral=False, longitudinal=True, t=t)
                    return None
        elif isinstance(action, LaneChangeAction):
            run = LaneChangeRun(element, b, path, action, t, self)
        elif isinstance(action, LaneOffsetAction):
            run = LaneOffsetRun(element, b, path, action, t, self)
        elif isinstance(action, FollowTrajectoryAction):
            run = TrajectoryRun(element, b, path, action, t, self)
        else:
            raise PlayerError(f"{path}: {type(action).__name__} is not a private action")
        self._take(b, lateral=run.lateral, longitudinal=run.longitudinal, t=t)
        if run.lateral:
            self._lat[b.index] = run  # type: ignore[assignment]
        if run.longitudinal:
            self._long[b.index] = run
        if isinstance(run, LateralRun) and run.profile.is_step and not b.is_ego:
            b.t = run.value(t)  # a step: in place at once
            b.x, b.y = self.road.to_world(b.s, b.t)
            if not run.continuous_target:
                self._release(run)
                return None
        if isinstance(run, TrajectoryRun) and not b.is_ego:  # position mode: on the path from the start
            x, y, h = run.pose_at_time(t)[:3] if run.timed else run.pose_at_arc(run.arc)
            b.set_pose(self.road, x, y, h)
        return run

    def _take(self, b: Body, *, lateral: bool, longitudinal: bool, t: float) -> None:
        """Free the body's domains for a new action: the runs holding them are stopped (overridden)."""
        i = b.index
        old = []
        if longitudinal and self._long[i] is not None:
            old.append(self._long[i])
        if lateral and self._lat[i] is not None:
            old.append(self._lat[i])
        for run in {id(r): r for r in old if r is not None}.values():
            self._release(run)
            el = run.element
            if el is None:
                continue
            runs = self._runs_of.get(el)
            if runs is not None and run in runs:
                runs.remove(run)
                if not runs:
                    del self._runs_of[el]
                    self.storyboard.action_overridden(el, t)

    # -- Init ------------------------------------------------------------------------------------

    def _init(self) -> None:
        init = self.scenario.init
        pending = [a for a in init if isinstance(a.action, TeleportAction)]
        while pending:  # teleports in dependency order (relative positions need their reference placed)
            progress = False
            for a in list(pending):
                assert a.entity is not None
                refs = _position_refs(a.action.position)  # type: ignore[union-attr]
                if all(self._by_name[r].placed for r in refs):
                    self._start_private(None, self._by_name[a.entity], a.action, 0.0)
                    pending.remove(a)
                    progress = True
            if not progress:
                raise NotExecutableError(
                    f"{self.scenario.path}: Init positions reference each other in a cycle or an entity "
                    f"never placed: {', '.join(a.path for a in pending)}"
                )
        unplaced = [b.name for b in self._bodies if not b.placed]
        if unplaced:
            raise NotExecutableError(
                f"{self.scenario.path}: no TeleportAction in Init places {', '.join(unplaced)}"
            )
        for a in init:
            if isinstance(a.action, TeleportAction):
                continue
            if isinstance(a.action, EnvironmentAction):
                self.conditions = a.action.conditions
                continue
            assert a.entity is not None
            b = self._by_name[a.entity]
            if b.is_ego and isinstance(a.action, SpeedAction):
                run = SpeedRun(None, b, a.path, a.action, 0.0, self)
                if run.profile.duration <= 0.0 and not run.continuous:
                    b.v = run.profile.v1  # the ego's initial speed comes from the file
                    continue
            self._start_private(None, b, a.action, 0.0)
        for b in self._bodies:
            c, s = math.cos(b.h), math.sin(b.h)
            b.vx, b.vy = b.v * c, b.v * s

    # -- what conditions and positions read ------------------------------------------------------

    def body(self, name: str) -> Body:
        return self._by_name[name]

    def bodies(self) -> list[Body]:
        return self._bodies

    def element_state(self, key: str) -> str:
        return self.storyboard.element_state(key)

    def transitioned(self, key: str, transition: str) -> bool:
        return self.storyboard.transitioned(key, transition)

    def position_pose(self, pos: Position) -> tuple[float, float, float]:
        """(x, y, heading) of a position now (relative positions follow their reference entity)."""
        road = self.road
        if isinstance(pos, WorldPosition):
            if pos.h is not None:
                return pos.x, pos.y, pos.h
            _, t = road.to_road(pos.x, pos.y)
            lane = road.lane_at(t)
            return pos.x, pos.y, road.lane_heading(lane.lane_id) if lane else road.heading
        if isinstance(pos, LanePosition):
            lane = road.lane(pos.lane_id)
            x, y = road.to_world(pos.s, lane.center + lane.direction * pos.offset)
            h = (
                pos.heading
                if pos.heading is not None
                else road.lane_heading(lane.lane_id) + pos.relative_heading
            )
            return x, y, h
        if isinstance(pos, RoadPosition):
            x, y = road.to_world(pos.s, pos.t)
            return x, y, pos.heading if pos.heading is not None else road.heading + pos.relative_heading
        if isinstance(pos, RelativeLanePosition):
            ref = self._by_name[pos.entity]
            ref_lane = road.lane_at(ref.t)
            lane = road.shifted_lane(ref_lane.lane_id, pos.d_lane) if ref_lane else None
            if lane is None or ref_lane is None:
                raise PlayerError(f"RelativeLanePosition: no lane {pos.d_lane:+d} from {pos.entity}'s lane")
            s = ref.s + ref_lane.direction * pos.ds
            x, y = road.to_world(s, lane.center + lane.direction * pos.offset)
            return x, y, road.lane_heading(lane.lane_id) + pos.relative_heading
        if isinstance(pos, RelativeWorldPosition):
            ref = self._by_name[pos.entity]
            return ref.x + pos.dx, ref.y + pos.dy, pos.h if pos.h is not None else ref.h
        assert isinstance(pos, RelativeObjectPosition)
        ref = self._by_name[pos.entity]
        c, s = math.cos(ref.h), math.sin(ref.h)
        return ref.x + pos.dx * c - pos.dy * s, ref.y + pos.dx * s + pos.dy * c, ref.h + pos.relative_heading

    # -- what the caller reads -------------------------------------------------------------------

    def _ego_state(self) -> EgoState:
        b = self._ego
        assert b is not None
        return EgoState(b.x, b.y, b.h, b.v)

    def _refresh_intent(self, t: float) -> None:
        b = self._ego
        if b is None:
            return
        i = b.index
        intent = self.ego_intent
        keys: list[str] = []
        long, lat = self._long[i], self._lat[i]
        intent.pose = None
        if isinstance(long, SpeedRun):
            intent.speed = long.profile.speed(t)
            intent.target_speed = long.profile.v1
        if isinstance(lat, LateralRun):
            intent.lateral = lat.value(t)
            if lat.lane_id is not None:
                intent.lane_id = lat.lane_id
        if isinstance(lat, TrajectoryRun):
            if lat.timed:
                x, y, h, vx, vy = lat.pose_at_time(t)
                intent.speed = math.hypot(vx, vy)
            else:
                x, y, h = lat.pose_at_arc(lat.arc)
            intent.pose = (x, y, h)
        for run in (long, lat):
            if run is not None and run.element is not None and run.element.key not in keys:
                keys.append(run.element.key)
        intent.actions = tuple(keys)

    def poses(self) -> list[EntityPose]:
        return [
            EntityPose(b.name, b.x, b.y, b.h, b.v, b.length, b.width, b.cx, b.cy, b.is_ego)
            for b in self._bodies
        ]

    def pose_array(self) -> np.ndarray:
        """(N, 4) array of x, y, heading, speed in entity order (for a world placing many actors)."""
        return np.asarray([(b.x, b.y, b.h, b.v) for b in self._bodies], dtype=float)

    def state_of(self, name_or_key: str) -> str:
        return self.storyboard.elements[self.key_of(name_or_key)].state

    def key_of(self, name_or_key: str) -> str:
        """The unique element key for a name or a '::'-qualified suffix of one."""
        els = self.storyboard.elements
        if name_or_key in els:
            return name_or_key
        tail = name_or_key.split("::")
        hits = [k for k in els if k.split("::")[-len(tail) :] == tail]
        if len(hits) != 1:
            raise KeyError(f"{name_or_key!r} names {len(hits)} storyboard elements")
        return hits[0]

    def transitions(self, name_or_key: str, transition: str | None = None) -> list[Transition]:
        key = self.key_of(name_or_key)
        return [
            x for x in self.log if x.element == key and (transition is None or x.transition == transition)
        ]


def _actors_of(element: Element) -> tuple[str, ...]:
    el: Element | None = element
    while el is not None and el.kind != "maneuverGroup":
        el = el.parent
    return el.actors if el is not None else ()


def _position_refs(pos: Position) -> list[str]:
    return (
        [pos.entity]
        if isinstance(pos, RelativeLanePosition | RelativeWorldPosition | RelativeObjectPosition)
        else []
    )


def _triggers(scenario: Scenario) -> Iterator[Trigger]:
    if scenario.stop is not None:
        yield scenario.stop
    for story in scenario.stories:
        for act in story.acts:
            yield from _act_triggers(act)


def _act_triggers(act: ActDef) -> Iterator[Trigger]:
    for trig in (act.start, act.stop):
        if trig is not None:
            yield trig
    for group in act.groups:
        for man in group.maneuvers:
            for ev in man.events:
                if ev.start is not None:
                    yield ev.start


def _conditions(scenario: Scenario) -> Iterator[Condition]:
    for trig in _triggers(scenario):
        for group in trig.groups:
            yield from group


def _ego_teleports(scenario: Scenario, ego: str | None) -> Iterator[str]:
    if ego is None:
        return
    for story in scenario.stories:
        for act in story.acts:
            for group in act.groups:
                if ego not in group.actors:
                    continue
                for man in group.maneuvers:
                    for ev in man.events:
                        for a in ev.actions:
                            if isinstance(a.action, TeleportAction):
                                yield a.path
