"""Flagged replay intervals -> parameterized OpenSCENARIO 1.3 scenarios (+ OpenDRIVE roads) and sweeps.

Each flagged segment (``replay_report.FlaggedSegment``) becomes a folder of three files, written with
``scenariogeneration`` and validated against the official schemas:

* ``<id>.xosc``: an OpenSCENARIO 1.3 scenario: the ego and every ground-truth actor of the
  interval, each actor following its recorded trajectory (a timed polyline), the environment
  (fog visual range, precipitation, sun) and ``ParameterDeclarations`` for ``EgoSpeed``,
  ``GapTime``, ``ActorType`` and the weather (``Weather``, ``Lighting``, ``Severity`` and the
  physical values they imply). Replay frames are ego-centred, so trajectories are recorded
  relative to the ego and written as OpenSCENARIO expressions of ``$EgoSpeed``
  (``${x0 + $EgoSpeed * t + dx}``): relative motion is preserved for any ego speed, and the key
  actor (the one the candidate missed most) is shifted by ``($GapTime - g0) * $EgoSpeed``;
* ``road.xodr``: the OpenDRIVE road (a straight four-lane carriageway; intersection and
  roundabout intervals are abstracted onto it, their relative geometry kept);
* ``<id>_sweep.xosc``: an OpenSCENARIO ``ParameterValueDistribution`` over the scenario:
  deterministic single-parameter sets (ego speed, gap time, actor type) crossed with a
  multi-parameter set per weather condition. ``expand_sweep`` reads it back into concrete
  parameter assignments (the cross product), and ``runs_from_library`` maps those onto
  highway-env runs of the matching category (cut-in, stopped lead, merge, cruise).

Every file is validated (``scenario_schema``); what a scenario is and how a segment is classified
live in ``scenario_templates``, the sweeps' expansion into runs in ``scenario_sweeps``; this module
writes the files. Domain code: no dagster import; scenariogeneration and lxml are imported where
used (the code location loads without them).
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from adas.simulation.config import SimulationConfig
from adas.simulation.replay_report import FlaggedSegment
from adas.simulation.scenario_schema import check_quality, validate_file
from adas.simulation.scenario_templates import (
    DEFAULT_EGO_SPEED,
    LANE_WIDTH_M,
    OSC_CATEGORY,
    Condition,
    ScenarioTemplate,
    classify,
    ego_frame,
    fwd_right,
)

# A fixed header date keeps files byte-identical for identical inputs (content-addressed storage);
# the real generation time is recorded in the library index.
HEADER_DATE: Final[datetime.datetime] = datetime.datetime(2000, 1, 1)
AUTHOR: Final[str] = "adas-assets scenario extraction"
LANES: Final[int] = 4
ROAD_LENGTH_M: Final[float] = 2000.0
EGO_START: Final[tuple[float, float]] = (50.0, -6.0)  # x, y (OpenSCENARIO: y to the left): lane 2
# The scene plays on this long after the recording (the actors keep their last speed along the road),
# so that what a missed detection leads to (a collision, a hard brake) happens within the run.
PLAY_ON_S: Final[float] = 8.0
PARAMETERS: Final[tuple[str, ...]] = (
    "EgoSpeed",
    "GapTime",
    "ActorType",
    "Weather",
    "Lighting",
    "Severity",
    "FogVisualRange",
    "Precipitation",
    "PrecipitationIntensity",
    "SunIntensity",
    "SunElevation",
)


def _num(v: float) -> str:
    s = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def _expr(base: float, t: float, offset: float, gap_shift: float | None = None) -> str:
    """``${base + $EgoSpeed * t + offset [+ ($GapTime - g0) * $EgoSpeed]}`` as an OpenSCENARIO expression."""
    total = base + offset
    s = f"${{{_num(total)} + $EgoSpeed * {_num(t)}"
    if gap_shift is not None:
        s += f" + ($GapTime - {_num(gap_shift)}) * $EgoSpeed"
    return s + "}"


def _vehicle(xosc: Any, name: str, category: str, length: float, width: float) -> Any:
    # The positions written are the replay's box centres: the declared reference point is the
    # box centre (centre offset 0), so a player, esmini or CARLA puts each box where it was recorded.
    bb = xosc.BoundingBox(round(width, 2), round(length, 2), 1.6 if category != "truck" else 3.5, 0, 0, 0.8)
    fa = xosc.Axle(0.52, 0.7, round(width * 0.85, 2), round(max(length - 1.2, 0.5), 2), 0.35)
    ba = xosc.Axle(0.52, 0.7, round(width * 0.85, 2), 0, 0.35)
    return xosc.Vehicle(name, category, bb, fa, ba, 69, 6, 9)


def _write_xodr(path: Path) -> None:
    from lxml import etree
    from scenariogeneration import xodr

    road = xodr.create_road(
        [xodr.Line(ROAD_LENGTH_M)], id=0, left_lanes=0, right_lanes=LANES, lane_width=LANE_WIDTH_M
    )
    odr = xodr.OpenDrive("adas-straight-4-lane")
    odr.add_road(road)
    odr.adjust_roads_and_lanes()
    odr.write_xml(str(path))
    doc = etree.parse(str(path))
    for header in doc.getroot().iter("header"):
        header.set("date", HEADER_DATE.isoformat())  # fixed: identical inputs, identical bytes
    doc.write(str(path), xml_declaration=True, encoding="utf-8", pretty_print=True)


def extract_scenario(seg: FlaggedSegment, cfg: SimulationConfig, out_dir: Path) -> ScenarioTemplate:
    """Write the scenario, its road and its sweep for one flagged segment; validate all three."""
    from scenariogeneration import xosc

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(seg.model_dump_json().encode()).hexdigest()[:8]
    sid = f"{seg.segment_id}-{digest}"
    category, key, deficit = classify(seg)
    vertical, ego_len, ego_wid = ego_frame(seg)
    ego_speed0 = DEFAULT_EGO_SPEED.get(seg.scenario, 20.0)
    key_type = key.category if key is not None else "car"
    cond = Condition(weather=seg.weather, lighting=seg.lighting, severity=max(seg.severity, 1))

    g0 = 1.2
    if key is not None:
        f0, _, klen, _ = fwd_right(key.points[0], vertical)
        if f0 > 0:
            g0 = max(0.1, (f0 - (ego_len + klen) / 2) / ego_speed0)
    defaults = {
        "EgoSpeed": _num(ego_speed0),
        "GapTime": _num(round(g0, 3)),
        "ActorType": OSC_CATEGORY[key_type],
        **cond.parameters(),
    }
    pd = xosc.ParameterDeclarations()
    types = {
        "ActorType": "string",
        "Weather": "string",
        "Lighting": "string",
        "Precipitation": "string",
        "Severity": "int",
    }
    for name in PARAMETERS:
        ptype = getattr(xosc.ParameterType, types.get(name, "double"))
        pd.add_parameter(xosc.Parameter(name, ptype, defaults[name]))

    entities = xosc.Entities()
    entities.add_scenario_object("Ego", _vehicle(xosc, "ego", "car", ego_len, ego_wid))
    init = xosc.Init()
    x0, y0 = EGO_START
    init.add_init_action("Ego", xosc.TeleportAction(xosc.WorldPosition(_num(x0), _num(y0), 0, 0)))
    init.add_init_action(
        "Ego",
        xosc.AbsoluteSpeedAction(
            "$EgoSpeed", xosc.TransitionDynamics(xosc.DynamicsShapes.step, xosc.DynamicsDimension.time, 0)
        ),
    )
    env = xosc.Environment(
        "replay_condition",
        xosc.TimeOfDay(False, 2025, 6, 21, 12, 0, 0),
        xosc.Weather(
            sun=xosc.Sun("$SunIntensity", 3.14, "$SunElevation"),
            fog=xosc.Fog("$FogVisualRange"),
            precipitation=xosc.Precipitation("$Precipitation", "$PrecipitationIntensity"),
        ),
        xosc.RoadCondition(1.0),
    )
    init.add_global_action(xosc.EnvironmentAction(env))

    # ">= 0": the recordings start with the scenario (at t = 0), not one step later.
    start = xosc.ValueTrigger(
        "at_start", 0, xosc.ConditionEdge.none, xosc.SimulationTimeCondition(0, xosc.Rule.greaterOrEqual)
    )
    act = xosc.Act("replayed_interval", start)
    t_start = seg.start_s
    for track in seg.tracks:
        if len(track.points) < 2:
            continue
        name = f"Actor{track.gt_track}"
        is_key = key is not None and track.gt_track == key.gt_track
        f, _, length, width = fwd_right(track.points[0], vertical)
        category_attr = "$ActorType" if is_key else OSC_CATEGORY.get(track.category, "car")
        entities.add_scenario_object(name, _vehicle(xosc, name.lower(), category_attr, length, width))
        shift = round(g0, 3) if is_key else None
        positions, times = [], []
        for p in track.points:
            fwd, right, _, _ = fwd_right(p, vertical)
            t = round(p.t_s - t_start, 3)
            positions.append(xosc.WorldPosition(_expr(x0, t, fwd, shift), _num(y0 - right), 0, 0))
            times.append(t)
        init.add_init_action(name, xosc.TeleportAction(positions[0]))
        f_last, _, _, _ = fwd_right(track.points[-1], vertical)
        span = max(track.points[-1].t_s - track.points[0].t_s, 1e-3)
        rel = (f_last - f) / span
        init.add_init_action(
            name,
            xosc.AbsoluteSpeedAction(
                f"${{$EgoSpeed + {_num(rel)}}}" if rel >= 0 else f"${{$EgoSpeed - {_num(-rel)}}}",
                xosc.TransitionDynamics(xosc.DynamicsShapes.step, xosc.DynamicsDimension.time, 0),
            ),
        )
        traj = xosc.Trajectory(f"{name}_recorded", False)
        traj.add_shape(xosc.Polyline(times, positions))
        follow = xosc.FollowTrajectoryAction(
            traj, xosc.FollowingMode.position, xosc.ReferenceContext.relative, 1, 0
        )
        event = xosc.Event(f"{name}_follows_recording", xosc.Priority.override)
        event.add_action(f"{name}_trajectory", follow)
        event.add_trigger(start)
        man = xosc.Maneuver(f"{name}_maneuver")
        man.add_event(event)
        group = xosc.ManeuverGroup(f"{name}_group")
        group.add_actor(name)
        group.add_maneuver(man)
        act.add_maneuver_group(group)
    duration = round(seg.end_s - seg.start_s + 1.0 / seg.fps, 3)
    stop = xosc.ValueTrigger(
        "interval_over",
        0,
        xosc.ConditionEdge.rising,
        xosc.SimulationTimeCondition(duration + PLAY_ON_S, xosc.Rule.greaterThan),
        "stop",
    )
    storyboard = xosc.StoryBoard(init, stop)
    if act.maneuvergroup:
        story = xosc.Story("replay")
        story.add_act(act)
        storyboard.add_story(story)

    xodr_name = "road.xodr"
    xosc_name = f"{sid}.xosc"
    sweep_name = f"{sid}_sweep.xosc"
    _write_xodr(out_dir / xodr_name)
    scenario = xosc.Scenario(
        f"{sid}: {category} from replay {seg.segment_id} ({'; '.join(seg.reasons)})"[:250],
        AUTHOR,
        pd,
        entities,
        storyboard,
        xosc.RoadNetwork(xodr_name),
        xosc.Catalog(),
        osc_minor_version=3,
        creation_date=HEADER_DATE,
    )
    scenario.write_xml(str(out_dir / xosc_name))

    # The sweep: singles crossed with one multi-parameter set per weather condition.
    cc = cfg.categories.get(category)  # type: ignore[call-overload]
    speeds = [_num(v) for v in (cc.ego_speed_mps if cc else [ego_speed0])]
    gaps = [_num(round(min(max(g0, 0.8), 2.5), 2))] if category == "cut_in" else [defaults["GapTime"]]
    conditions = (
        [cond]
        if (cond.weather, cond.lighting) == ("clear", "day")
        else [cond, Condition(weather="clear", lighting="day", severity=1)]
    )
    single = {"EgoSpeed": speeds, "GapTime": gaps, "ActorType": [OSC_CATEGORY[key_type]]}
    det = xosc.Deterministic()
    for name, values in single.items():
        ds = xosc.DistributionSet()
        for v in values:
            ds.add_value(v)
        det.add_single_distribution(name, ds)
    multi = xosc.DeterministicMultiParameterDistribution()
    for c in conditions:
        vs = xosc.ParameterValueSet()
        for k, v in c.parameters().items():
            vs.add_parameter(k, v)
        multi.add_value_set(vs)
    det.add_multi_distribution(multi)
    pvd = xosc.ParameterValueDistribution(f"sweep of {sid}", AUTHOR, xosc_name, det, osc_minor_version=3)
    pvd.write_xml(str(out_dir / sweep_name))
    _fix_header_date(out_dir / sweep_name)
    for name in (xodr_name, xosc_name, sweep_name):
        validate_file(out_dir / name)
    for name in (xosc_name, sweep_name):
        check_quality(out_dir / name)
    return ScenarioTemplate(
        scenario_id=sid,
        segment_id=seg.segment_id,
        source_scenario=seg.scenario,
        category=category,
        reasons=list(seg.reasons),
        key_actor=key.gt_track if key is not None else None,
        key_actor_type=key_type,
        actors=sum(1 for t in seg.tracks if len(t.points) >= 2),
        duration_s=duration,
        defaults=defaults,
        sweep_single=single,
        sweep_conditions=conditions,
        actor_speed_delta_mps=round(float(min(max(deficit, 2.0), 10.0)), 3),
        xosc=xosc_name,
        xodr=xodr_name,
        sweep_xosc=sweep_name,
    )


def _fix_header_date(path: Path) -> None:
    from lxml import etree

    doc = etree.parse(str(path))
    for h in doc.getroot().iter("FileHeader"):
        h.set("date", HEADER_DATE.isoformat())
    doc.write(str(path), xml_declaration=True, encoding="utf-8", pretty_print=True)


def build_library(
    flagged: Sequence[FlaggedSegment], cfg: SimulationConfig, out_dir: Path
) -> list[ScenarioTemplate]:
    """One scenario folder per flagged segment under ``out_dir``; every file validated."""
    return [extract_scenario(seg, cfg, Path(out_dir) / seg.segment_id) for seg in flagged]
