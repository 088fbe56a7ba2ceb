"""Flagged intervals -> OpenSCENARIO 1.3 / OpenDRIVE files that validate; sweeps -> concrete runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from adas.simulation.config import SimulationConfig
from adas.simulation.replay_report import FlaggedSegment, FlaggedTrack, TrackPoint
from adas.simulation.scenario_schema import (
    ScenarioValidationError,
    validate_file,
    xodr_schema_path,
    xosc_schema_path,
)
from adas.simulation.scenario_sweeps import expand_sweep, runs_from_library
from adas.simulation.scenario_templates import classify
from adas.simulation.scenarios import build_library


def _points(xs: list[float], ys: list[float], length: float = 4.5, width: float = 1.9) -> list[TrackPoint]:
    return [
        TrackPoint(frame=10 + k, t_s=(10 + k) / 5, x_m=x, y_m=y, length_m=length, width_m=width)
        for k, (x, y) in enumerate(zip(xs, ys, strict=True))
    ]


def _segment(kind: str, weather: str = "fog") -> FlaggedSegment:
    n = 10
    if kind == "cut_in":  # a truck in the next lane moves into the ego's lane, slower than the ego
        key = FlaggedTrack(
            gt_track=7,
            category="truck",
            points=_points([30 - 1.0 * k for k in range(n)], [4.0 - 0.45 * k for k in range(n)], 10.5, 2.5),
            missed_by_candidate=10,
            missed_by_production=0,
        )
    else:  # a stopped car ahead in the ego's lane: approaches at the ego's speed
        key = FlaggedTrack(
            gt_track=7,
            category="car",
            points=_points([60 - 5.0 * k for k in range(n)], [0.2] * n),
            missed_by_candidate=8,
            missed_by_production=1,
        )
    other = FlaggedTrack(
        gt_track=3,
        category="motorcycle",
        points=_points([-20 + 0.5 * k for k in range(n)], [-4.0] * n, 2.2, 0.8),
        missed_by_candidate=0,
        missed_by_production=0,
    )
    return FlaggedSegment(
        segment_id=f"seq00-highway-s0001-seg0{1 if kind == 'cut_in' else 2}",
        sequence_id="seq00-highway-s0001",
        scenario="highway",
        weather=weather,
        lighting="day",
        severity=3,
        start_frame=10,
        end_frame=19,
        start_s=2.0,
        end_s=3.8,
        fps=5.0,
        reasons=["candidate recall 0.40 < production 0.95"],
        candidate_recall=0.4,
        production_recall=0.95,
        candidate_fp_per_frame=0.0,
        production_fp_per_frame=0.1,
        ego_points=_points([0.0] * n, [0.0] * n),
        tracks=[key, other],
    )


def test_schemas_are_the_shipped_official_ones() -> None:
    assert xosc_schema_path().is_file() and "1.3.0" in str(xosc_schema_path())
    assert xodr_schema_path().is_file()


def test_classification_of_flagged_intervals() -> None:
    cat, key, deficit = classify(_segment("cut_in"))
    assert cat == "cut_in" and key is not None and key.category == "truck" and deficit == pytest.approx(5.0)
    cat, key, _ = classify(_segment("stopped"))
    assert cat == "stopped_lead" and key is not None and key.gt_track == 7


def test_library_files_validate_and_carry_the_parameters(tmp_path: Path, sim_cfg: SimulationConfig) -> None:
    templates = build_library([_segment("cut_in"), _segment("stopped", weather="clear")], sim_cfg, tmp_path)
    assert [t.category for t in templates] == ["cut_in", "stopped_lead"]
    for t in templates:
        folder = tmp_path / t.segment_id
        for name in (t.xosc, t.xodr, t.sweep_xosc):
            validate_file(folder / name)  # raises if invalid
        root = etree.parse(str(folder / t.xosc)).getroot()
        assert root.find("FileHeader").get("revMinor") == "3"
        declared = {p.get("name") for p in root.iter("ParameterDeclaration")}
        assert {"EgoSpeed", "GapTime", "ActorType", "Weather", "FogVisualRange"} <= declared
        assert root.find(".//RoadNetwork/LogicFile").get("filepath") == "road.xodr"
        # trajectories follow the ego speed parameter; the key actor's class is the ActorType parameter
        xs = [v.get("x") for v in root.iter("WorldPosition")]
        assert any("$EgoSpeed" in x for x in xs)
        assert any(v.get("vehicleCategory") == "$ActorType" for v in root.iter("Vehicle"))
    cut = templates[0]
    assert "$GapTime" in (tmp_path / cut.segment_id / cut.xosc).read_text()
    fog = etree.parse(str(tmp_path / cut.segment_id / cut.xosc)).getroot().find(".//Fog")
    assert fog.get("visualRange") == "$FogVisualRange"


def test_identical_inputs_give_identical_files(tmp_path: Path, sim_cfg: SimulationConfig) -> None:
    a = build_library([_segment("cut_in")], sim_cfg, tmp_path / "a")[0]
    b = build_library([_segment("cut_in")], sim_cfg, tmp_path / "b")[0]
    assert a == b
    for name in (a.xosc, a.xodr, a.sweep_xosc):
        assert (tmp_path / "a" / a.segment_id / name).read_bytes() == (
            tmp_path / "b" / b.segment_id / name
        ).read_bytes()


def test_sweep_expands_to_the_cross_product_and_maps_to_runs(
    tmp_path: Path, sim_cfg: SimulationConfig
) -> None:
    (t,) = build_library([_segment("cut_in")], sim_cfg, tmp_path)
    points = expand_sweep(tmp_path / t.segment_id / t.sweep_xosc)
    assert (
        len(points) == t.sweep_size == len(sim_cfg.categories["cut_in"].ego_speed_mps) * 2
    )  # x (fog, clear)
    assert {p["Weather"] for p in points} == {"fog", "clear"}
    assert {p["FogVisualRange"] for p in points if p["Weather"] == "fog"} == {"120"}
    runs = runs_from_library([(t, points)], sim_cfg)
    assert len(runs) == len(points)
    r = runs[0]
    assert r.category == "cut_in" and r.actor_type == "truck" and r.source == f"library:{t.scenario_id}"
    assert r.ego_speed_mps == float(points[0]["EgoSpeed"]) and r.gap_time_s == float(points[0]["GapTime"])
    assert {(x.weather, x.severity) for x in runs} == {("fog", 3), ("clear", 1)}
    assert len({x.seed for x in runs}) == len(runs)


def test_runs_from_library_round_robin_over_scenarios(tmp_path: Path, sim_cfg: SimulationConfig) -> None:
    lib = build_library([_segment("cut_in"), _segment("stopped")], sim_cfg, tmp_path)
    pairs = [(t, expand_sweep(tmp_path / t.segment_id / t.sweep_xosc)) for t in lib]
    runs = runs_from_library(pairs, sim_cfg, max_runs=2)
    assert [r.category for r in runs] == ["cut_in", "stopped_lead"]


def test_a_broken_scenario_fails_naming_file_line_and_error(
    tmp_path: Path, sim_cfg: SimulationConfig
) -> None:
    (t,) = build_library([_segment("cut_in")], sim_cfg, tmp_path)
    path = tmp_path / t.segment_id / t.xosc
    text = path.read_text()
    broken = re.sub(
        r'<AbsoluteTargetSpeed value="\$EgoSpeed"', '<AbsoluteTargetSpeed value="fast"', text, count=1
    )
    assert broken != text
    bad = tmp_path / "broken.xosc"
    bad.write_text(broken)
    with pytest.raises(ScenarioValidationError, match=r"broken\.xosc does not validate.*line \d+.*'fast'"):
        validate_file(bad)
    missing = tmp_path / "missing_header.xosc"
    missing.write_text(re.sub(r"<FileHeader[^>]*/>", "", text, count=1))
    with pytest.raises(ScenarioValidationError, match="FileHeader"):
        validate_file(missing)
    junk = tmp_path / "junk.xosc"
    junk.write_text("<OpenSCENARIO><oops></OpenSCENARIO>")
    with pytest.raises(ScenarioValidationError, match="not well-formed"):
        validate_file(junk)
