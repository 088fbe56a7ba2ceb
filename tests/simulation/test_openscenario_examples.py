"""Issue #15: the scenarios shipped in ``scenariogeneration``'s examples that fall in the subset play without
error; the ones outside are refused naming the unsupported element.

The files are the examples' own output (tests/data/openscenario/scenariogeneration_examples/README.md
says how they were generated). ``EXPECTED`` is the single source of each file's outcome: the tests
below play or refuse every file against it, and one test holds the README's table to it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import pytest
from lxml import etree

from adas.simulation.openscenario import NotExecutableError, Player, load_scenario, play, read_distribution
from tests.simulation.openscenario_cases import CASES_DIR

EXAMPLES_DIR: Final[Path] = CASES_DIR / "scenariogeneration_examples"
STEP_S: Final[float] = 0.1
HORIZON_S: Final[float] = 20.0  # the step bound: at most 200 steps per example

Outcome = Literal["plays", "plays on a stand-in road", "outside", "sweep"]

_OUT = " is outside the supported subset"
_KMH = 1.0 / 3.6


@dataclass(frozen=True, slots=True)
class Expected:
    example: str  # the script under the repository's examples/ that writes the file
    road: str | None  # the OpenDRIVE file the scenario's LogicFile names (None: no RoadNetwork)
    outcome: Outcome
    reasons: tuple[str, ...] = ()  # outside: the player's refusal reasons for the file's own elements
    # plays: the stop trigger's time (None: the file has none, the step bound ends the run)
    stop_s: float | None = None
    # plays: entity speeds at the end, as the file's last SpeedActions ask
    speeds: tuple[tuple[str, float], ...] = ()


def _outside(*elements: str) -> tuple[str, ...]:
    return tuple(f"{e}{_OUT}" for e in elements)


EXPECTED: Final[dict[str, Expected]] = {
    "Acceleration_condition0.xosc": Expected(
        "xosc/Acceleration_condition.py",
        "e6mini.xodr",
        "outside",
        _outside("AccelerationCondition", "RelativeRoadPosition", "StandStillCondition"),
    ),
    "ParameterValueDistribution.xosc": Expected("xosc/ParameterValueDistribution.py", None, "sweep"),
    "base_scenario.xosc": Expected(
        "xosc/ParameterValueDistribution.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "Speed_condition0.xosc": Expected(
        "xosc/Speed_condition.py",
        "e6mini.xodr",
        "plays on a stand-in road",
        stop_s=15.0,
        speeds=(("Ego", 25.0), ("Target", 30.0)),
    ),
    "Stop_on_offroad0.xosc": Expected(
        "xosc/Stop_on_offroad.py",
        "e6mini.xodr",
        "outside",
        _outside("OffroadCondition", "RelativeSpeedCondition"),
    ),
    "angle_condition_trigger0.xosc": Expected(
        "xosc/angle_condition_trigger.py",
        "e6mini.xodr",
        "outside",
        _outside("AngleCondition", "CatalogReference"),
    ),
    "my_vehicles.xosc": Expected(
        "xosc/catalog_example.py",
        None,
        "outside",
        ("a Catalog file, not a scenario (sweeps: distributions.read_distribution)",),
    ),
    "clothoid_spline_shape_trajectory0.xosc": Expected(
        "xosc/clothoid_spline_shape_trajectory.py",
        "e6mini.xodr",
        "outside",
        _outside("CatalogReference", "ClothoidSpline"),
    ),
    "end_of_road_reset_traffic0.xosc": Expected(
        "xosc/end_of_road_reset_traffic.py",
        "straight_500m.xodr",
        "outside",
        _outside("CatalogReference", "EndOfRoadCondition"),
    ),
    "multi_conditional_and_triggers0.xosc": Expected(
        "xosc/multi_conditional_and_triggers.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "multi_conditional_different_actions0.xosc": Expected(
        "xosc/multi_conditional_different_actions.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "multi_conditional_or_triggers0.xosc": Expected(
        "xosc/multi_conditional_or_triggers.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "multiple_maneuvers0.xosc": Expected(
        "xosc/multiple_maneuvers.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "one_action_example0.xosc": Expected(
        "xosc/one_action_example.py", "e6mini.xodr", "outside", _outside("LongitudinalDistanceAction")
    ),
    "parallel_distance_actions0.xosc": Expected(
        "xosc/parallel_distance_actions.py", "e6mini.xodr", "outside", _outside("CatalogReference")
    ),
    "route_in_crossing0.xosc": Expected(
        "xosc/route_in_crossing.py",
        "fabriksgatan.xodr",
        "outside",
        _outside("AssignRouteAction", "CatalogReference"),
    ),
    "speed_profile0.xosc": Expected(
        "xosc/speed_profile.py", "e6mini.xodr", "outside", _outside("CatalogReference", "SpeedProfileAction")
    ),
    "syncronize_straight_example0.xosc": Expected(
        "xosc/syncronize_straight_example.py",
        "e6mini.xodr",
        "outside",
        _outside("CatalogReference", "SynchronizeAction"),
    ),
    "trailer_example0.xosc": Expected(
        "xosc/trailer_example.py",
        "straight_500m.xodr",
        "outside",
        _outside("StandStillCondition", "TrailerAction", "TrailerCoupler", "TrailerHitch"),
    ),
    "trajectory_example0.xosc": Expected(
        "xosc/trajectory_example.py",
        "e6mini.xodr",
        "plays on a stand-in road",
        stop_s=None,
        speeds=(("Ego", 30.0), ("Target", 40.0)),
    ),
    "variable_usage0.xosc": Expected(
        "xosc/variable_usage.py",
        "e6mini.xodr",
        "outside",
        _outside("CatalogReference", "VariableAction", "VariableCondition", "VariableDeclarations"),
    ),
    "withcontroller0.xosc": Expected(
        "xosc/withcontroller.py", "e6mini.xodr", "outside", _outside("ObjectController")
    ),
    "CCRs0.xosc": Expected(
        "generator/CCRs.py", "CCRs0.xodr", "plays", stop_s=13.0, speeds=(("Ego", 10 * _KMH), ("Target1", 0.0))
    ),
    "CCRs74.xosc": Expected(
        "generator/CCRs.py", "CCRs0.xodr", "plays", stop_s=13.0, speeds=(("Ego", 80 * _KMH), ("Target1", 0.0))
    ),
    "CCRm0.xosc": Expected(
        "generator/CCRm.py",
        "CCRm0.xodr",
        "plays",
        stop_s=15.0,
        speeds=(("Ego", 30 * _KMH), ("Target1", 20 * _KMH)),
    ),
    "CCRm54.xosc": Expected(
        "generator/CCRm.py",
        "CCRm0.xodr",
        "plays",
        stop_s=15.0,
        speeds=(("Ego", 80 * _KMH), ("Target1", 20 * _KMH)),
    ),
    "CCRb0.xosc": Expected(
        "generator/CCRb.py", "CCRb0.xodr", "outside", _outside("LongitudinalDistanceAction")
    ),
    "generate_from_main0.xosc": Expected(
        "generator/generate_from_main.py", "generate_from_main0.xodr", "outside", _outside("CatalogReference")
    ),
    "generate_with_expanded_permutations_road_curvature-0.001_speed-10_initial_distance-40_line_length-100.xosc": (
        Expected(
            "generator/generate_with_expanded_permutations.py",
            "generate_with_expanded_permutations_road_curvature-0.001_speed-10_initial_distance-40_line_length-100.xodr",
            "outside",
            _outside("CatalogReference"),
        )
    ),
    "generate_with_fixed_parameter_sets_road_curvature-0.001_speed-10.xosc": Expected(
        "generator/generate_with_fixed_parameter_sets.py",
        "generate_with_fixed_parameter_sets_road_curvature-0.001_speed-10.xodr",
        "outside",
        _outside("CatalogReference"),
    ),
    "generate_with_permutations0.xosc": Expected(
        "generator/generate_with_permutations.py",
        "generate_with_permutations0.xodr",
        "outside",
        _outside("CatalogReference"),
    ),
}

_PLAYED = sorted(n for n, e in EXPECTED.items() if e.outcome.startswith("plays"))
_REFUSED = sorted(n for n, e in EXPECTED.items() if e.outcome == "outside")


def _xosc(name: str) -> Path:
    return EXAMPLES_DIR / "xosc" / name


def _named_road(path: Path) -> str | None:
    logic = etree.parse(str(path)).getroot().find("RoadNetwork/LogicFile")
    return None if logic is None else logic.get("filepath")


def _stage_on_stand_in(tmp_path: Path, name: str, road: str) -> Path:
    """The file next to the platform's straight road under the name it asks for (esmini's road is not shipped)."""
    (tmp_path / "xosc").mkdir()
    (tmp_path / "xodr").mkdir()
    shutil.copy(_xosc(name), tmp_path / "xosc" / name)
    shutil.copy(CASES_DIR / "road.xodr", tmp_path / "xodr" / road)
    return tmp_path / "xosc" / name


def test_every_generated_file_is_listed_and_names_the_road_listed() -> None:
    on_disk = {p.name for p in (EXAMPLES_DIR / "xosc").glob("*.xosc")}
    assert on_disk == set(EXPECTED)
    for name, exp in EXPECTED.items():
        road = _named_road(_xosc(name))
        assert road == (None if exp.road is None else f"../xodr/{exp.road}"), name


@pytest.mark.parametrize("name", _PLAYED)
def test_an_example_in_the_subset_plays_to_its_stop_trigger_or_the_step_bound(
    tmp_path: Path, name: str
) -> None:
    exp = EXPECTED[name]
    assert exp.road is not None
    if exp.outcome == "plays":
        path = _xosc(name)  # on its own road, committed next to it
        assert (EXAMPLES_DIR / "xodr" / exp.road).is_file()
    else:
        path = _stage_on_stand_in(tmp_path, name, exp.road)
    scenario = load_scenario(path)
    assert scenario.executable, scenario.reason
    rec = play(scenario, step_s=STEP_S, ego="Ego", horizon_s=HORIZON_S)

    declared = {o.get("name") for o in etree.parse(str(path)).getroot().iter("ScenarioObject")}
    assert set(rec.values) == declared
    assert rec.values["Ego"]["odometer"][-1] > 10.0  # the ego drove (its intents were followed)
    if exp.stop_s is None:
        assert not rec.finished and rec.end_time == pytest.approx(HORIZON_S)
    else:  # the stop trigger (a rising SimulationTimeCondition) fired on the first step past its time
        assert rec.finished and exp.stop_s < rec.end_time <= exp.stop_s + STEP_S + 1e-9
    for entity, speed in exp.speeds:
        assert rec.values[entity]["speed"][-1] == pytest.approx(speed, abs=0.05), entity
    # Every story ran to its end: the events' triggers fired and their actions completed.
    ended = {t.element for t in rec.log if t.element_type == "story" and t.transition == "endTransition"}
    assert ended == {s.key for s in scenario.stories}


@pytest.mark.parametrize("name", sorted(n for n in _PLAYED if EXPECTED[n].outcome != "plays"))
def test_without_a_road_next_to_it_an_example_is_refused_naming_the_road_file(name: str) -> None:
    road = EXPECTED[name].road
    assert road is not None and not (EXAMPLES_DIR / "xodr" / road).exists()
    with pytest.raises(NotExecutableError, match=rf"cannot read the OpenDRIVE file.*{re.escape(road)}"):
        Player(load_scenario(_xosc(name)), ego="Ego")


@pytest.mark.parametrize("name", _REFUSED)
def test_an_example_outside_the_subset_is_refused_naming_the_unsupported_element(name: str) -> None:
    exp = EXPECTED[name]
    scenario = load_scenario(_xosc(name))
    assert not scenario.executable
    assert {f.reason for f in scenario.findings if f.kind == "unsupported"} == set(exp.reasons)
    # Whatever else is found is the road file this copy does not ship (esmini's, or the example's own).
    others = [f for f in scenario.findings if f.kind != "unsupported"]
    assert all("cannot read the OpenDRIVE file" in f.reason for f in others), others
    with pytest.raises(NotExecutableError) as refused:
        Player(scenario)
    for reason in exp.reasons:
        assert reason in str(refused.value)
        if reason.endswith(_OUT):  # named by its XML path
            element = reason.removesuffix(_OUT)
            assert re.search(rf"/{element}(\[\d+\])?: {re.escape(reason)}", str(refused.value)), element


def test_the_parameter_value_distribution_expands_into_its_seeded_sweep() -> None:
    sweep = read_distribution(_xosc("ParameterValueDistribution.xosc"))
    assert sweep.scenario_file.name == "base_scenario.xosc"
    assert len(sweep.points) == 50  # numberOfTestRuns
    assert all(set(p) == {"egospeed", "targetspeed"} for p in sweep.points)
    assert all(15.0 <= float(p["targetspeed"]) <= 35.0 for p in sweep.points)  # the histogram's bins
    assert read_distribution(_xosc("ParameterValueDistribution.xosc")).points == sweep.points  # seeded


def _readme_rows() -> dict[str, tuple[str, str | None, str, tuple[str, ...]]]:
    rows = {}
    for line in (EXAMPLES_DIR / "README.md").read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == 5, line
        file, example, road, outcome, reasons = cells
        named = re.match(r"`([^`]+)`", road)
        rows[file.strip("`")] = (
            example.strip("`").removeprefix("examples/"),
            named.group(1) if named else None,
            outcome,
            () if reasons == "—" else tuple(r.strip().strip("`") for r in reasons.split("<br>")),
        )
    return rows


def test_the_readme_table_lists_every_example_with_its_outcome() -> None:
    expected = {n: (e.example, e.road, e.outcome, e.reasons) for n, e in EXPECTED.items()}
    assert _readme_rows() == expected
