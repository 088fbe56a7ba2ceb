"""Benchmark the OpenSCENARIO player's cost per simulation step (issue #15: <= 0.2 ms for 10 entities).

    python scripts/benchmark_openscenario.py [--entities 10] [--steps 3000] [--step-s 0.2] [--repeats 5]

Builds a scenario with an ego and ``entities - 1`` actors on the platform's straight road, like
the ones the scenario library extracts and more: half the actors follow recorded trajectories
(timed polylines, 0.2 s vertices), the others run speed and lane-change actions started by
time-to-collision, headway, relative-distance and speed conditions, one tracks the ego's speed
(continuous), and a collision condition and a never-firing time-to-collision condition stay live
every step. The ego's states are computed up front (it keeps its speed), so the timing covers
``Player.step`` only: actors advanced, triggers evaluated, storyboard pass, intents. Rendering,
the engine and the world's own step are excluded (see scripts/benchmark_simulation.py for those).
Prints the best, median and worst over repeats of the mean per-step cost, wall clock and this
process's CPU time (steadier when other work shares the cores).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from adas.simulation.openscenario import EgoState, Player, load_scenario  # noqa: E402

_VEHICLE = """<ScenarioObject name="{name}"><Vehicle name="{name}" vehicleCategory="car">
<BoundingBox><Center x="1.4" y="0" z="0.8"/><Dimensions width="1.9" length="4.5" height="1.6"/></BoundingBox>
<Performance maxSpeed="70" maxAcceleration="10" maxDeceleration="10"/>
<Axles><FrontAxle maxSteering="0.5" wheelDiameter="0.6" trackWidth="1.8" positionX="2.8" positionZ="0.3"/>
<RearAxle maxSteering="0" wheelDiameter="0.6" trackWidth="1.8" positionX="0" positionZ="0.3"/></Axles></Vehicle></ScenarioObject>"""


def _teleport(name: str, lane: int, s: float, speed: float) -> str:
    return (
        f'<Private entityRef="{name}"><PrivateAction><TeleportAction><Position><LanePosition roadId="0" laneId="{lane}" s="{s}"/>'
        f"</Position></TeleportAction></PrivateAction><PrivateAction><LongitudinalAction><SpeedAction>"
        f'<SpeedActionDynamics dynamicsShape="step" dynamicsDimension="time" value="0"/><SpeedActionTarget>'
        f'<AbsoluteTargetSpeed value="{speed}"/></SpeedActionTarget></SpeedAction></LongitudinalAction></PrivateAction></Private>'
    )


def _entity_condition(name: str, actor: str, inner: str, edge: str = "rising") -> str:
    return (
        f'<Condition name="{name}" delay="0" conditionEdge="{edge}"><ByEntityCondition><TriggeringEntities triggeringEntitiesRule="any">'
        f'<EntityRef entityRef="{actor}"/></TriggeringEntities><EntityCondition>{inner}</EntityCondition></ByEntityCondition></Condition>'
    )


def _event(name: str, action: str, condition: str, priority: str = "override") -> str:
    return (
        f'<Event name="{name}" priority="{priority}"><Action name="{name}_action"><PrivateAction>{action}</PrivateAction></Action>'
        f"<StartTrigger><ConditionGroup>{condition}</ConditionGroup></StartTrigger></Event>"
    )


def _group(actor: str, *events: str) -> str:
    return (
        f'<ManeuverGroup name="{actor}_group" maximumExecutionCount="1"><Actors selectTriggeringEntities="false">'
        f'<EntityRef entityRef="{actor}"/></Actors><Maneuver name="{actor}_maneuver">{"".join(events)}</Maneuver></ManeuverGroup>'
    )


def _speed(value: float, shape: str = "linear", seconds: float = 3.0) -> str:
    return (
        f'<LongitudinalAction><SpeedAction><SpeedActionDynamics dynamicsShape="{shape}" dynamicsDimension="time" value="{seconds}"/>'
        f'<SpeedActionTarget><AbsoluteTargetSpeed value="{value}"/></SpeedActionTarget></SpeedAction></LongitudinalAction>'
    )


def build_scenario(folder: Path, entities: int, duration_s: float) -> Path:
    actors = [f"Actor{k}" for k in range(1, entities)]
    init = [_teleport("Ego", -2, 50.0, 25.0)]
    groups = []
    for k, actor in enumerate(actors):
        lane = -1 - (k % 4)
        s0 = 80.0 + 25.0 * k
        init.append(_teleport(actor, lane, s0, 22.0))
        if k % 2 == 0:  # a recorded track, like the library's extracted scenarios
            vertices = "".join(
                f'<Vertex time="{t:.1f}"><Position><WorldPosition x="{s0 + 22.0 * t:.3f}" '
                f'y="{-4.0 * (k % 4) - 2.0 + 0.8 * math.sin(0.3 * t + k):.3f}" z="0" h="0"/></Position></Vertex>'
                for t in (0.2 * j for j in range(round(duration_s / 0.2) + 1))
            )
            action = (
                f'<RoutingAction><FollowTrajectoryAction><TrajectoryRef><Trajectory name="{actor}_track" closed="false">'
                f"<Shape><Polyline>{vertices}</Polyline></Shape></Trajectory></TrajectoryRef><TimeReference>"
                '<Timing domainAbsoluteRelative="absolute" scale="1" offset="0"/></TimeReference>'
                '<TrajectoryFollowingMode followingMode="position"/></FollowTrajectoryAction></RoutingAction>'
            )
            cond = '<Condition name="now" delay="0" conditionEdge="none"><ByValueCondition><SimulationTimeCondition value="0" rule="greaterOrEqual"/></ByValueCondition></Condition>'
            groups.append(_group(actor, _event(f"{actor}_replay", action, cond)))
        elif k % 4 == 1:  # brakes when the ego's time to collision to it drops, then changes lane on headway
            ttc = _entity_condition(
                "ttc",
                "Ego",
                f'<TimeToCollisionCondition value="3.0" freespace="true" rule="lessThan" relativeDistanceType="longitudinal" coordinateSystem="entity">'
                f'<TimeToCollisionConditionTarget><EntityRef entityRef="{actor}"/></TimeToCollisionConditionTarget></TimeToCollisionCondition>',
            )
            headway = _entity_condition(
                "headway",
                "Ego",
                f'<TimeHeadwayCondition entityRef="{actor}" value="1.0" freespace="true" rule="lessThan"/>',
            )
            lane_change = (
                '<LateralAction><LaneChangeAction><LaneChangeActionDynamics dynamicsShape="sinusoidal" dynamicsDimension="time" value="3"/>'
                f'<LaneChangeTarget><RelativeTargetLane entityRef="{actor}" value="{1 if lane < -1 else -1}"/></LaneChangeTarget></LaneChangeAction></LateralAction>'
            )
            groups.append(
                _group(
                    actor,
                    _event(f"{actor}_brake", _speed(15.0), ttc),
                    _event(f"{actor}_change", lane_change, headway, "parallel"),
                )
            )
        else:  # tracks the ego's speed once close, and stops on any collision
            close = _entity_condition(
                "close",
                actor,
                '<RelativeDistanceCondition entityRef="Ego" value="40" freespace="false" rule="lessThan" relativeDistanceType="euclidianDistance"/>',
            )
            follow = (
                '<LongitudinalAction><SpeedAction><SpeedActionDynamics dynamicsShape="step" dynamicsDimension="time" value="0"/>'
                '<SpeedActionTarget><RelativeTargetSpeed entityRef="Ego" value="-1" speedTargetValueType="delta" continuous="true"/>'
                "</SpeedActionTarget></SpeedAction></LongitudinalAction>"
            )
            crash = _entity_condition(
                "crash", actor, '<CollisionCondition><ByType type="vehicle"/></CollisionCondition>'
            )
            groups.append(
                _group(
                    actor,
                    _event(f"{actor}_follow", follow, close),
                    _event(f"{actor}_stop", _speed(0.0, "step", 0), crash, "parallel"),
                )
            )
    never = _entity_condition("never", "Ego", '<SpeedCondition value="100" rule="greaterThan"/>', edge="none")
    groups.append(_group("Ego", _event("Ego_never", _speed(10.0), never)))
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<OpenSCENARIO><FileHeader revMajor="1" revMinor="3" date="2026-01-01T00:00:00" author="benchmark" description="player benchmark"/>
<ParameterDeclarations/><CatalogLocations/><RoadNetwork/>
<Entities>{"".join(_VEHICLE.format(name=n) for n in ["Ego", *actors])}</Entities>
<Storyboard><Init><Actions>{"".join(init)}</Actions></Init>
<Story name="story"><Act name="act">{"".join(groups)}</Act></Story>
<StopTrigger><ConditionGroup><Condition name="end" delay="0" conditionEdge="rising"><ByValueCondition>
<SimulationTimeCondition value="{duration_s * 10}" rule="greaterThan"/></ByValueCondition></Condition></ConditionGroup></StopTrigger>
</Storyboard></OpenSCENARIO>"""
    path = folder / "benchmark.xosc"
    path.write_text(xml)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=10, help="entities including the ego")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--step-s", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    duration_s = args.steps * args.step_s
    with tempfile.TemporaryDirectory() as tmp:
        scenario = load_scenario(build_scenario(Path(tmp), args.entities, duration_s))
    if not scenario.executable:
        raise SystemExit(f"benchmark scenario not executable: {scenario.reason}")
    per_step_ms = []  # wall clock
    per_step_cpu_ms = []  # this process's CPU time: steadier on a shared machine
    fired = 0
    for _ in range(args.repeats):
        player = Player(scenario, step_s=args.step_s, ego="Ego")
        start = player.ego_start
        assert start is not None
        egos = [
            EgoState(start.x + start.v * args.step_s * (k + 1), start.y, start.h, start.v)
            for k in range(args.steps)
        ]
        t0, c0 = time.perf_counter(), time.process_time()
        for ego in egos:
            player.step(ego)
        per_step_ms.append((time.perf_counter() - t0) / args.steps * 1000.0)
        per_step_cpu_ms.append((time.process_time() - c0) / args.steps * 1000.0)
        fired = sum(1 for x in player.log if x.element_type == "event" and x.transition == "startTransition")
    print(
        f"OpenSCENARIO player: {args.entities} entities, {args.steps} steps of {args.step_s:g} s, "
        f"{fired} event starts per run, {args.repeats} runs"
    )
    for label, values in (("wall", per_step_ms), ("cpu", per_step_cpu_ms)):
        print(
            f"per step ({label}, mean over a run): best {min(values):.4f} ms, "
            f"median {statistics.median(values):.4f} ms, worst {max(values):.4f} ms (target <= 0.2 ms)"
        )


if __name__ == "__main__":
    main()
