"""Playing OpenSCENARIO: the player's contract with the world around it (the ego is the caller's, storyboard
ego actions are intents), refusals, run-time errors, and the scenarios the scenario library extracts."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from adas.simulation.config import SimulationConfig
from adas.simulation.openscenario import (
    EgoState,
    NotExecutableError,
    Player,
    PlayerError,
    load_scenario,
    play,
    read_distribution,
)
from adas.simulation.scenario_sweeps import expand_sweep
from adas.simulation.scenarios import PLAY_ON_S, build_library
from tests.simulation.openscenario_cases import CASES_DIR
from tests.simulation.test_scenarios import _segment


def test_the_ego_is_never_moved_by_the_storyboard_its_actions_are_intents() -> None:
    player = Player(load_scenario(CASES_DIR / "ego_intents.xosc"), step_s=0.2, ego="Ego")
    assert player.ego_start == EgoState(50.0, -6.0, 0.0, 20.0)  # Init comes from the file
    parked = EgoState(60.0, -10.0, 0.0, 0.0)  # the caller's world keeps the ego still
    seen = []
    while player.time < 5.0 - 1e-9:
        player.step(parked)
        ego = player.body("Ego")
        assert (ego.x, ego.y, ego.v) == (60.0, -10.0, 0.0)
        intent = player.ego_intent
        seen.append((round(player.time, 1), intent.speed, intent.lane_id, intent.lateral))
    # Asked for, never applied; each transition starts from the ego's measured state (0 m/s, t = -10 m).
    assert (3.0, 15.0, -1, -6.0) in seen
    assert seen[-1] == (5.0, 30.0, -1, -2.0)
    assert player.transitions("ego_to_30", "endTransition")[0].time == pytest.approx(5.0)
    actor = next(p for p in player.poses() if p.name == "Actor")
    assert actor.v == 0.0  # it tracks the ego's (measured) speed


def test_a_player_with_an_ego_needs_its_state_every_step() -> None:
    player = Player(load_scenario(CASES_DIR / "ego_intents.xosc"), ego="Ego")
    with pytest.raises(ValueError, match="needs its state from the caller's world"):
        player.step()
    with pytest.raises(ValueError, match="no entity named 'Hero' to be the ego"):
        Player(load_scenario(CASES_DIR / "ego_intents.xosc"), ego="Hero")


def test_a_storyboard_teleport_is_refused_for_the_ego_only() -> None:
    scenario = load_scenario(CASES_DIR / "ego_teleport_refused.xosc")
    assert scenario.executable
    with pytest.raises(
        NotExecutableError, match=r"Event/Action: a storyboard TeleportAction would move the ego Ego"
    ):
        Player(scenario, ego="Ego")
    rec = play(scenario, ego=None)  # with every entity played, it is an ordinary teleport
    assert rec.value("Ego", "x", 1.0) == pytest.approx(300.0)


def test_a_scenario_outside_the_subset_is_refused_with_its_findings() -> None:
    scenario = load_scenario(CASES_DIR / "unsupported_element.xosc")
    with pytest.raises(NotExecutableError, match="AssignRouteAction is outside the supported subset"):
        Player(scenario)


def _copy_case(tmp_path: Path, name: str, *replacements: tuple[str, str]) -> Path:
    text = (CASES_DIR / f"{name}.xosc").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    shutil.copy(CASES_DIR / "road.xodr", tmp_path / "road.xodr")
    out = tmp_path / f"{name}.xosc"
    out.write_text(text)
    return out


def test_a_relative_lane_off_the_road_fails_at_run_time_naming_the_action(tmp_path: Path) -> None:
    path = _copy_case(
        tmp_path,
        "lane_change_relative_distance",
        (
            '<RelativeTargetLane entityRef="Reference" value="1"/>',
            '<RelativeTargetLane entityRef="Reference" value="5"/>',
        ),
    )
    scenario = load_scenario(path)
    assert scenario.executable  # which lane is +5 from Reference depends on where it is when the event starts
    with pytest.raises(PlayerError, match=r"Event/Action: no lane \+5 from Reference's lane -3 on road 0"):
        play(scenario, ego=None)


def test_init_positions_that_depend_on_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    path = _copy_case(
        tmp_path,
        "teleport_positions",
        (
            '<WorldPosition x="10.0" y="-6.0" z="0.0" h="0.0"/>',
            '<RelativeWorldPosition entityRef="D" dx="1.0" dy="0.0"/>',
        ),
    )
    with pytest.raises(NotExecutableError, match="reference each other in a cycle or an entity never placed"):
        Player(load_scenario(path), ego=None)


def test_an_entity_without_an_init_position_is_refused(tmp_path: Path) -> None:
    text = (CASES_DIR / "speed_step.xosc").read_text()
    start = text.index("<PrivateAction>\n                        <TeleportAction>")
    end = text.index("</PrivateAction>", start) + len("</PrivateAction>")
    shutil.copy(CASES_DIR / "road.xodr", tmp_path / "road.xodr")
    (tmp_path / "unplaced.xosc").write_text(text[:start] + text[end:])
    with pytest.raises(NotExecutableError, match="no TeleportAction in Init places Car"):
        Player(load_scenario(tmp_path / "unplaced.xosc"), ego=None)


def test_poses_and_the_pose_array_agree_and_map_onto_highway_env() -> None:
    player = Player(load_scenario(CASES_DIR / "teleport_positions.xosc"), ego=None)
    arr = player.pose_array()
    poses = player.poses()
    assert arr.shape == (6, 4)
    for row, pose in zip(arr, poses, strict=True):
        assert tuple(row) == (pose.x, pose.y, pose.h, pose.v)
    b = next(p for p in poses if p.name == "B")  # lane -3 (highway-env lane 2), 0.5 m to the left
    assert player.road.to_highway(b.x, b.y, b.h) == pytest.approx((40.0, 7.5, 0.0))


def test_an_extracted_library_scenario_plays_its_recorded_tracks(
    tmp_path: Path, sim_cfg: SimulationConfig
) -> None:
    (template,) = build_library([_segment("cut_in")], sim_cfg, tmp_path)
    folder = tmp_path / template.segment_id
    scenario = load_scenario(folder / template.xosc)
    assert scenario.executable, scenario.reason
    player = Player(scenario, step_s=0.2, ego="Ego")
    ego = player.ego_start
    assert ego is not None
    (action,) = [
        a.action
        for story in scenario.stories
        for act in story.acts
        for g in act.groups
        for m in g.maneuvers
        for e in m.events
        for a in e.actions
        if a.name == "Actor7_trajectory"
    ]
    vertices = [(v.time, v.position.x, v.position.y) for v in action.vertices]  # type: ignore[union-attr]
    positions = {0.0: (player.body("Actor7").x, player.body("Actor7").y)}
    while not player.finished and player.time < 20.0:
        ego = EgoState(ego.x + ego.v * 0.2, ego.y, ego.h, ego.v)  # the ego keeps its speed
        player.step(ego)
        positions[round(player.time, 3)] = (player.body("Actor7").x, player.body("Actor7").y)
    start = player.transitions("Actor7_trajectory", "startTransition")[0].time
    assert start == pytest.approx(0.0)  # the file's trigger: simulation time >= 0 (the recording starts at 0)
    for t, x, y in vertices:  # relative timing: vertex time t plays at start + t
        got = positions[round(start + t, 3)]
        assert math.hypot(got[0] - x, got[1] - y) < 1e-9
    assert player.finished and player.time == pytest.approx(template.duration_s + PLAY_ON_S + 0.2)
    sweep = read_distribution(folder / template.sweep_xosc)
    assert sweep.scenario_file == (folder / template.xosc).resolve()
    assert sorted(map(sorted, (p.items() for p in sweep.points))) == sorted(
        map(sorted, (p.items() for p in expand_sweep(folder / template.sweep_xosc)))
    )
    for point in sweep.points:
        assert load_scenario(sweep.scenario_file, point).executable
