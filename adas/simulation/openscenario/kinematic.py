"""The kinematic world: the player's actors on the straight road plus an ego that does what it is asked.

``KinematicEgo`` stands in for the closed-loop ego (highway-env + the engine + the proxy
controller, in the next increment) where a test, the conformance suite or the benchmark needs
one: each step it takes the storyboard's ``EgoIntent`` as a perfect controller would (the
speed asked for, the lateral position asked for, the trajectory pose asked for) and otherwise
keeps its speed and lane. ``play`` runs a scenario to its stop trigger (or a horizon) and records
every entity at every step.

Domain code: no dagster import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from adas.simulation.openscenario.model import RenderConditions, Scenario
from adas.simulation.openscenario.player import EgoIntent, EgoState, Player
from adas.simulation.openscenario.storyboard import Transition

FIELDS = ("x", "y", "heading", "speed", "road_s", "road_t", "lane_id", "lane_offset", "odometer")


class KinematicEgo:
    """An ego on the straight road that follows the storyboard's intents exactly (one step behind,
    as a controller acting on them would be)."""

    def __init__(self, player: Player) -> None:
        if player.ego_start is None:
            raise ValueError("the player has no ego")
        self.player = player
        start = player.ego_start
        self.x, self.y, self.h, self.v = start.x, start.y, start.h, start.v
        self.s, self.t = player.road.to_road(self.x, self.y)

    def step(self, intent: EgoIntent, dt: float) -> EgoState:
        road = self.player.road
        if intent.pose is not None:
            x, y, h = intent.pose
            self.v = math.hypot(x - self.x, y - self.y) / dt if intent.speed is None else intent.speed
            self.x, self.y, self.h = x, y, h
            self.s, self.t = road.to_road(x, y)
            return EgoState(self.x, self.y, self.h, self.v)
        v_new = intent.speed if intent.speed is not None else self.v
        self.s += 0.5 * (self.v + v_new) * dt
        self.v = v_new
        t_new = intent.lateral if intent.lateral is not None else self.t
        lat_speed = (t_new - self.t) / dt
        self.t = t_new
        if abs(self.v) > 1e-9 or abs(lat_speed) > 1e-9:
            self.h = road.heading + math.atan2(lat_speed, self.v)
        self.x, self.y = road.to_world(self.s, self.t)
        return EgoState(self.x, self.y, self.h, self.v)


@dataclass
class Recording:
    """Every entity's state at every step (``times`` from 0), the transitions, how the run ended."""

    times: np.ndarray
    values: dict[str, dict[str, np.ndarray]]  # entity -> field (``FIELDS``) -> per-step values
    log: list[Transition]
    finished: bool  # the stop trigger fired
    end_time: float
    intents: list[EgoIntent] = field(default_factory=list)
    conditions: list[RenderConditions | None] = field(default_factory=list)

    def index(self, t: float) -> int:
        k = int(np.argmin(np.abs(self.times - t)))
        if abs(self.times[k] - t) > 1e-6:
            raise KeyError(
                f"no step at t={t} (steps every {self.times[1] - self.times[0]:g} s up to {self.times[-1]:g})"
            )
        return k

    def value(self, entity: str, name: str, t: float) -> float:
        return float(self.values[entity][name][self.index(t)])


def play(
    scenario: Scenario, *, step_s: float = 0.2, ego: str | None = "Ego", horizon_s: float = 60.0
) -> Recording:
    """Play ``scenario`` in the kinematic world until its stop trigger fires or ``horizon_s`` passes."""
    player = Player(scenario, step_s=step_s, ego=ego)
    kin_ego = KinematicEgo(player) if player.ego_start is not None else None
    rows: list[list[tuple[float, ...]]] = []
    times: list[float] = []
    intents: list[EgoIntent] = []
    conditions: list[RenderConditions | None] = []

    def record() -> None:
        times.append(player.time)
        rows.append([_row(player, b) for b in player.bodies()])
        intents.append(
            EgoIntent(**{k: getattr(player.ego_intent, k) for k in EgoIntent.__dataclass_fields__})
        )
        conditions.append(player.conditions)

    record()
    n_steps = round(horizon_s / step_s)
    while not player.finished and player.k < n_steps:
        state = kin_ego.step(player.ego_intent, step_s) if kin_ego is not None else None
        player.step(state)
        record()
    arr = np.asarray(rows, dtype=float)  # (T, N, F)
    values = {b.name: {f: arr[:, i, j] for j, f in enumerate(FIELDS)} for i, b in enumerate(player.bodies())}
    return Recording(
        np.asarray(times), values, list(player.log), player.finished, player.time, intents, conditions
    )


def _row(player: Player, b) -> tuple[float, ...]:  # type: ignore[no-untyped-def]
    lane = player.road.lane_at(b.t)
    lane_id = lane.lane_id if lane is not None else 0
    offset = (b.t - lane.center) * lane.direction if lane is not None else 0.0
    return (b.x, b.y, b.h, b.v, b.s, b.t, lane_id, offset, b.odometer)
