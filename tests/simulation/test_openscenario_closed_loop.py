"""OpenSCENARIO in closed loop: the player moves the scene on highway-env, the ego drives on detections.

The gate turns red on a candidate that misses the cut-in vehicle of a scenario the replay extracted,
and names that scenario; the same scenario with a perception that sees is not red for it. The
shipped cut-in file plays through the same code path (its cut-in fires, a seeing ego does not collide).
Small: a few short episodes with the oracle (ground-truth boxes) and a fault wrapper around it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adas.datasets.config import DatagenConfig
from adas.datasets.simulator import SceneSimulator
from adas.simulation.closed_loop import run_episode
from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.gate import evaluate_gate
from adas.simulation.metrics import RunRecord, episode_metrics
from adas.simulation.openscenario import Player, load_scenario
from adas.simulation.perception import Fault, Perception, PerceptionSpec, build_perception
from adas.simulation.planning import plan_category
from adas.simulation.replay_report import FlaggedSegment, FlaggedTrack
from adas.simulation.scenario_sweeps import LIBRARY_DIR, expand_sweep, runs_from_library
from adas.simulation.scenarios import build_library
from adas.simulation.world import ClosedLoopSimulator, ego_state, place_actors, setup_openscenario
from tests.simulation.test_scenarios import _points, _segment

pytestmark = pytest.mark.slow

ORACLE = PerceptionSpec(label="production", kind="oracle")
MISSES_TRUCKS = ORACLE.with_faults("candidate", Fault(kind="drop_class", classes=["truck"]))


def _cut_in_segment() -> FlaggedSegment:
    """A truck in the next lane, 1 m/s slower than the ego, moves into the ego's lane ~27 m ahead."""
    n = 10
    truck = FlaggedTrack(
        gt_track=7,
        category="truck",
        points=_points(
            [35 - 1.0 * k for k in range(n)], [4.0 - 0.45 * k if k < 9 else 0.0 for k in range(n)], 10.5, 2.5
        ),
        missed_by_candidate=10,
        missed_by_production=0,
    )
    return _segment("cut_in").model_copy(update={"tracks": [truck]})


def _records(
    label: str,
    perception: Perception,
    runs: list[EpisodeSpec],
    sim_cfg: SimulationConfig,
    datagen: DatagenConfig,
    root: Path,
) -> list[RunRecord]:
    out = []
    for run in runs:
        episode = run_episode(run, perception, datagen, sim_cfg.controller, scenario_root=root)
        out.append(
            RunRecord(
                model=label,
                spec=run,
                metrics=episode_metrics(run, episode.trace, sim_cfg.metrics),
                wall_s=0.0,
            )
        )
    return out


def test_the_gate_is_red_on_a_candidate_that_misses_the_cut_in_vehicle_and_names_the_scenario(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    (template,) = build_library([_cut_in_segment()], sim_cfg, tmp_path / LIBRARY_DIR)
    assert template.category == "cut_in" and template.executable
    points = expand_sweep(tmp_path / LIBRARY_DIR / template.segment_id / template.sweep_xosc)
    runs = [
        r.model_copy(update={"duration_s": 8.0})
        for r in runs_from_library([(template, points)], sim_cfg, max_runs=2)
    ]
    assert {r.xosc for r in runs} == {f"{LIBRARY_DIR}/{template.segment_id}/{template.xosc}"}

    production = _records("production", build_perception(ORACLE), runs, sim_cfg, datagen, tmp_path)
    candidate = _records("candidate", build_perception(MISSES_TRUCKS), runs, sim_cfg, datagen, tmp_path)
    assert all(r.metrics.collisions == 0 for r in production)
    assert any(r.metrics.collision_with == "truck" for r in candidate)
    # Time to first detection: the oracle sees every vehicle ahead in the frame it enters (here its
    # ego changes lane, so the truck is never ahead: no time); the candidate never sees the truck.
    assert all(r.metrics.time_to_first_detection_s in (None, 0.0) for r in production)
    assert all(r.metrics.undetected_leads == 0 for r in production)
    assert all(r.metrics.undetected_leads == 1 and r.metrics.time_to_first_detection_s for r in candidate)

    verdict = evaluate_gate(candidate, production, sim_cfg.gate)
    assert verdict.verdict == "red"
    (check,) = [c for c in verdict.checks if c.name == "library_scenario_still_fails"]
    assert check.status == "fail" and check.scope == template.scenario_id
    assert template.scenario_id in verdict.rationale
    (outcome,) = [o for o in verdict.scenarios if o.source == "library"]
    assert (outcome.scenario, outcome.outcome, outcome.production_failures) == (
        template.scenario_id,
        "fail",
        0,
    )
    assert outcome.runs_with_undetected_lead == len(runs)
    assert f"(never in {len(runs)} runs)" in verdict.rationale

    seeing = [r.model_copy(update={"model": "candidate"}) for r in production]
    (check,) = [
        c
        for c in evaluate_gate(seeing, production, sim_cfg.gate).checks
        if c.name == "library_scenario_still_fails"
    ]
    assert check.status == "pass"


def test_the_shipped_cut_in_file_plays_through_the_same_path(
    sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    (run,) = plan_category(sim_cfg, "cut_in", 1)
    assert run.xosc == "cut_in.xosc" and run.parameters["GapTime"] == f"{run.gap_time_s:g}"
    run = run.model_copy(update={"duration_s": 8.0})
    (record,) = _records(
        "production", build_perception(ORACLE), [run], sim_cfg, datagen, Path("config/scenarios")
    )
    assert record.metrics.event_triggered_s is not None  # the cut-in fired
    assert record.metrics.collisions == 0


@pytest.mark.parametrize("category", ["cruise", "merge"])
def test_cruise_and_merge_are_files_played_through_the_same_path(
    category: str, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    (run,) = plan_category(sim_cfg, category, 1)
    assert run.xosc == f"{category}.xosc" and run.parameters["Spacing"]
    run = run.model_copy(update={"duration_s": 14.0})
    (record,) = _records(
        "production", build_perception(ORACLE), [run], sim_cfg, datagen, Path("config/scenarios")
    )
    assert record.metrics.event_triggered_s is not None  # a lane change into the ego's lane happened
    assert record.metrics.collisions == 0 and record.metrics.off_road_events == 0
    assert record.metrics.undetected_leads == 0


def test_a_run_without_a_scenario_file_is_refused_naming_the_run(
    sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    (run,) = plan_category(sim_cfg, "cut_in", 1)
    with pytest.raises(ValueError, match=f"run {run.run_id}: EpisodeSpec.xosc is unset"):
        run_episode(
            run.model_copy(update={"xosc": None}), build_perception(ORACLE), datagen, sim_cfg.controller
        )


def test_the_fast_lane_markings_draw_the_same_frame_as_highway_env(datagen: DatagenConfig) -> None:
    player = Player(load_scenario(Path("config/scenarios/cruise.xosc")), step_s=0.2, ego="Ego")
    sim = ClosedLoopSimulator(datagen, "highway", "sparse", 3, np.random.default_rng(3))
    try:
        actors = setup_openscenario(sim, player)
        for _ in range(6):  # the view moves with the ego: the stripes' phase changes frame to frame
            fast, stock = sim.render(), SceneSimulator.render(sim)
            assert np.array_equal(fast.render_image, stock.render_image)
            assert np.array_equal(fast.image, stock.image) and fast.boxes == stock.boxes
            # Both read the surface once as RGB bytes: highway-env's own get_image (surfarray
            # + transpose), resized the way the generator always did, gives the same pixels.
            own = sim.env.render()
            assert np.array_equal(fast.render_image, own)
            size = (datagen.frame.width, datagen.frame.height)
            assert np.array_equal(
                fast.image, np.asarray(Image.fromarray(own).resize(size, Image.Resampling.BILINEAR))
            )
            sim.advance(0.2)
            player.step(ego_state(player, sim.ego))
            place_actors(player, actors)
    finally:
        sim.close()
