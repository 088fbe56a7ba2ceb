"""Reading OpenSCENARIO: expressions, parameters, sweeps, the road, the environment mapping, and findings
that name what is outside the subset or invalid (by XML path) instead of skipping it."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from adas.simulation.openscenario import load_scenario, read_distribution
from adas.simulation.openscenario.distributions import DistributionError
from adas.simulation.openscenario.environment import render_conditions
from adas.simulation.openscenario.expressions import ExpressionError, evaluate, resolve
from adas.simulation.openscenario.parameters import coerce
from adas.simulation.openscenario.road import platform_road, read_opendrive
from adas.simulation.scenario_templates import Condition
from adas.simulation.scenarios import _write_xodr
from tests.simulation.openscenario_cases import CASES_DIR

# -- expressions ----------------------------------------------------------------------------------


def test_expressions_follow_the_standard_grammar() -> None:
    params = {"EgoSpeed": 30.0, "Gap": "12", "On": True}
    assert resolve("${$EgoSpeed + 2.5}", params) == 32.5
    assert resolve("$Gap", params) == "12"  # a reference is the parameter's value
    assert resolve("12.5", params) == "12.5"  # a literal stays text for the attribute's type
    assert evaluate("2 + 3 * 4 - 6 / 3", {}) == 12.0
    assert evaluate("-(2 - 5) % 2 + $Gap", params) == 13.0
    assert evaluate("round(2.5) + round(-2.5) + floor(-0.5) + ceil(0.2) + sqrt(16) + pow(2, 3)", {}) == 12.0
    assert evaluate("not ($On and false) or false", params) is True


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("${$Missing + 1}", "parameter 'Missing' is not declared"),
        ("${sin(1)}", "unknown function 'sin'"),
        ("${1 / (2 - 2)}", "division by zero"),
        ("${1 +}", "unexpected end"),
        ("${true + 1}", "a boolean is used as a number"),
        ("${pow(2)}", "pow() takes 2 argument(s), got 1"),
        ("${$Name * 2}", "parameter 'Name' = 'car' is not a number"),
        ("$Missing", "parameter 'Missing' is not declared"),
    ],
)
def test_expression_errors_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ExpressionError, match=why.replace("(", r"\(").replace(")", r"\)")):
        resolve(text, {"Name": "car"})


def test_parameter_values_take_their_declared_type() -> None:
    assert coerce(2.5, "int", "n") == 3 and coerce(-2.5, "int", "n") == -3  # half away from zero
    assert coerce("true", "boolean", "b") is True
    with pytest.raises(ExpressionError, match="negative for unsignedInt"):
        coerce(-1.0, "unsignedInt", "n")
    with pytest.raises(ExpressionError, match="'fast' is not a number"):
        coerce("fast", "double", "v")


# -- files with findings ----------------------------------------------------------------------------


def _variant(tmp_path: Path, base: str, *replacements: tuple[str, str]) -> Path:
    """A conformance case with text replaced, next to a copy of the road."""
    text = (CASES_DIR / f"{base}.xosc").read_text()
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new, 1)
    shutil.copy(CASES_DIR / "road.xodr", tmp_path / "road.xodr")
    out = tmp_path / f"{base}_variant.xosc"
    out.write_text(text)
    return out


def test_overrides_are_checked_against_declarations_and_constraints(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "parameter_expression",
        (
            '<ParameterDeclaration name="EgoSpeed" parameterType="double" value="20"/>',
            '<ParameterDeclaration name="EgoSpeed" parameterType="double" value="20"><ConstraintGroup>'
            '<ValueConstraint rule="greaterOrEqual" value="10"/><ValueConstraint rule="lessThan" value="40"/>'
            "</ConstraintGroup></ParameterDeclaration>",
        ),
    )
    assert load_scenario(path, {"EgoSpeed": "39"}).executable
    too_fast = load_scenario(path, {"EgoSpeed": "45"})
    assert not too_fast.executable
    assert "parameter EgoSpeed=45.0 violates its value constraints" in too_fast.reason
    assert "ParameterDeclaration[1]" in too_fast.reason
    unknown = load_scenario(path, {"EgoSped": "20"})
    assert "parameter overrides name no declared parameter: EgoSped" in unknown.reason


def test_invalid_references_are_findings_not_exceptions(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "state_chain",
        ('storyboardElementRef="E1"', 'storyboardElementRef="E9"'),
        ('<AbsoluteTargetLane value="-1"/>', '<AbsoluteTargetLane value="-7"/>'),
        ('<EntityRef entityRef="Car"/>', '<EntityRef entityRef="Truck"/>'),
        ('roadId="0"', 'roadId="3"'),
    )
    scenario = load_scenario(path)
    assert not scenario.executable
    assert {f.kind for f in scenario.findings} == {"invalid"}
    reason = scenario.reason
    assert "storyboardElementRef='E9' names 0 event elements" in reason
    assert "value=-7: road 0 has no lane -7" in reason
    assert "entityRef='Truck' names no entity" in reason
    assert "roadId='3': the road network has road '0' only" in reason


def test_values_outside_the_subset_are_named(tmp_path: Path) -> None:
    path = _variant(
        tmp_path,
        "trajectory_relative_scaled",
        ('followingMode="position"', 'followingMode="follow"'),
        ('closed="false"', 'closed="true"'),
    )
    scenario = load_scenario(path)
    assert not scenario.executable and {f.kind for f in scenario.findings} == {"unsupported"}
    assert "followingMode='follow': only 'position' is supported" in scenario.reason
    assert "a closed trajectory is outside the supported subset" in scenario.reason
    assert "/FollowTrajectoryAction/TrajectoryFollowingMode" in scenario.reason


def test_a_file_the_schema_rejects_is_not_executable(tmp_path: Path) -> None:
    path = _variant(tmp_path, "speed_step", ('priority="override"', 'priority="urgent"'))
    scenario = load_scenario(path)
    assert not scenario.executable
    assert "does not validate against 1.3.0/OpenSCENARIO.xsd" in scenario.reason


def test_a_distribution_file_is_not_a_scenario() -> None:
    scenario = load_scenario(CASES_DIR / "sweep_deterministic.xosc")
    assert not scenario.executable
    assert "a ParameterValueDistribution file, not a scenario" in scenario.reason


def test_a_missing_file_raises() -> None:
    with pytest.raises(FileNotFoundError, match="no scenario file"):
        load_scenario(CASES_DIR / "no_such_case.xosc")


# -- sweeps ---------------------------------------------------------------------------------------------


def test_a_stochastic_sweep_needs_a_seed_and_the_same_seed_draws_the_same_points(tmp_path: Path) -> None:
    text = (CASES_DIR / "sweep_stochastic.xosc").read_text().replace(' randomSeed="7"', "")
    path = tmp_path / "unseeded.xosc"
    path.write_text(text)
    with pytest.raises(DistributionError, match="without randomSeed needs a seed from the caller"):
        read_distribution(path)
    a, b = read_distribution(path, seed=3), read_distribution(path, seed=3)
    assert a.points == b.points and a.seed == 3
    assert read_distribution(path, seed=4).points != a.points
    assert a.scenario_file == (tmp_path / "parameter_expression.xosc").resolve()


def test_a_user_defined_distribution_is_named(tmp_path: Path) -> None:
    text = (CASES_DIR / "sweep_deterministic.xosc").read_text()
    old = '<DistributionSet>\n                    <Element value="20"/>\n                    <Element value="25"/>\n                </DistributionSet>'
    assert old in text
    path = tmp_path / "user_defined.xosc"
    path.write_text(text.replace(old, '<UserDefinedDistribution type="mine">x</UserDefinedDistribution>'))
    with pytest.raises(DistributionError, match=r"UserDefinedDistribution is outside the supported subset"):
        read_distribution(path)


# -- the road -------------------------------------------------------------------------------------------


def test_the_platform_road_file_reads_as_highway_envs_road(tmp_path: Path) -> None:
    _write_xodr(tmp_path / "road.xodr")
    road, findings = read_opendrive(tmp_path / "road.xodr")
    assert not findings and road is not None
    assert [(lane.lane_id, lane.center) for lane in road.lanes] == [
        (lane.lane_id, lane.center) for lane in platform_road().lanes
    ]
    # highway-env: lane i centred at y = 4 i, y to the right; OpenSCENARIO: y to the left.
    assert [road.highway_lane_index(k) for k in (-1, -2, -3, -4)] == [0, 1, 2, 3]
    for k, lane_id in enumerate((-1, -2, -3, -4)):
        x, y = road.to_world(25.0, road.lane(lane_id).center)
        assert road.to_highway(x, y, 0.1) == pytest.approx((25.0, 4.0 * k, -0.1))
    assert road.shifted_lane(-2, 1).lane_id == -1  # type: ignore[union-attr]
    assert road.shifted_lane(-2, -2).lane_id == -4  # type: ignore[union-attr]
    assert road.shifted_lane(-1, 1) is None
    # a boundary belongs to the lane on its left; off the edge, the nearest lane
    assert [road.lane_at(t).lane_id for t in (-4.0, -4.001, -20.0, 1.0)] == [-1, -2, -4, -1]  # type: ignore[union-attr]


def test_road_features_outside_the_subset_are_named(tmp_path: Path) -> None:
    text = (CASES_DIR / "road.xodr").read_text()
    text = text.replace(
        '<width a="4.0" b="0.0" c="0.0" d="0.0" sOffset="0"/>',
        '<width a="4.0" b="0.01" c="0.0" d="0.0" sOffset="0"/>',
        1,
    )
    path = tmp_path / "widening.xodr"
    path.write_text(text)
    road, findings = read_opendrive(path)
    assert road is None
    assert [f.reason for f in findings] == [
        "lane width varies along the road: only constant widths are supported"
    ]
    assert findings[0].path == "widening.xodr:/OpenDRIVE/road/lanes/laneSection/right/lane[1]/width"


# -- the environment ---------------------------------------------------------------------------------------


def test_environment_mapping_inverts_the_scenario_librarys_conditions() -> None:
    for weather, lighting, severity in itertools.product(
        ("clear", "fog", "rain", "snow"), ("day", "night", "glare"), (1, 2, 3, 4, 5)
    ):
        p = Condition(weather=weather, lighting=lighting, severity=severity).parameters()
        got = render_conditions(
            fog_visual_range=float(p["FogVisualRange"]),
            precipitation_type=p["Precipitation"],
            precipitation_intensity=float(p["PrecipitationIntensity"]),
            sun_illuminance=float(p["SunIntensity"]),
            sun_elevation=float(p["SunElevation"]),
            hour=12.0,
        )
        assert (got.weather, got.lighting) == (weather, lighting)
        if weather == "clear":  # the library writes no severity for a clear sky: day 1, otherwise 3
            assert got.severity == (1 if lighting == "day" else 3)
        else:
            assert got.severity == severity, (weather, lighting, severity, got)


def test_without_a_sun_the_time_of_day_decides_the_lighting() -> None:
    def at(hour: float) -> str:
        return render_conditions(
            fog_visual_range=None,
            precipitation_type=None,
            precipitation_intensity=0.0,
            sun_illuminance=None,
            sun_elevation=None,
            hour=hour,
        ).lighting

    assert [at(h) for h in (3.0, 6.0, 20.9, 21.0)] == ["night", "day", "day", "night"]


def test_generated_file_conventions_are_read(tmp_path: Path) -> None:
    """What scenariogeneration-written files do: siblings sharing a name, "$name" declarations, catalogs."""
    path = _variant(
        tmp_path,
        "speed_relative_continuous",
        ('name="follower_group"', 'name="group"'),
        ('name="lead_group"', 'name="group"'),
        (
            "<ParameterDeclarations/>",
            '<ParameterDeclarations><ParameterDeclaration name="$owner" parameterType="string" value="Lead"/>'
            "</ParameterDeclarations>",
        ),
        ('<EntityRef entityRef="Lead"/>', '<EntityRef entityRef="$owner"/>'),
    )
    scenario = load_scenario(path)
    assert scenario.executable, scenario.reason
    groups = scenario.stories[0].acts[0].groups
    assert [g.key for g in groups] == ["story::act::group", "story::act::group#2"]
    assert groups[1].actors == ("Lead",)

    ambiguous = load_scenario(_variant(tmp_path, "state_chain", ('<Event name="E2"', '<Event name="E1"')))
    assert "storyboardElementRef='E1' names 2 event elements (needs exactly one)" in ambiguous.reason

    text = (CASES_DIR / "speed_step.xosc").read_text()
    vehicle = text[text.index("<Vehicle ") : text.index("</Vehicle>") + len("</Vehicle>")]
    catalog = load_scenario(
        _variant(
            tmp_path,
            "speed_step",
            (vehicle, '<CatalogReference catalogName="VehicleCatalog" entryName="car"/>'),
        )
    )
    # one finding: the catalog; the references to the entity it defines are not findings of their own
    assert [f.path for f in catalog.findings] == ["/OpenSCENARIO/Entities/ScenarioObject/CatalogReference"]


def test_histograms_dollar_names_and_fractional_seeds_in_sweeps(tmp_path: Path) -> None:
    path = tmp_path / "histogram.xosc"
    path.write_text(
        (CASES_DIR / "sweep_stochastic.xosc")
        .read_text()
        .replace('randomSeed="7"', 'randomSeed="1.234"')
        .replace('parameterName="StartS"', 'parameterName="$StartS"')
        .replace(
            """<NormalDistribution expectedValue="30.0" variance="25.0">
                    <Range lowerLimit="25.0" upperLimit="35.0"/>
                </NormalDistribution>""",
            """<Histogram>
                    <Bin weight="0.3"><Range lowerLimit="15.0" upperLimit="25.0"/></Bin>
                    <Bin weight="0.7"><Range lowerLimit="25.0" upperLimit="35.0"/></Bin>
                </Histogram>""",
        )
    )
    sweep = read_distribution(path)
    assert len(sweep.points) == 6 and all(15.0 <= float(p["StartS"]) <= 35.0 for p in sweep.points)
    assert sweep.seed != 1  # 1.234 is not truncated to the seed 1
