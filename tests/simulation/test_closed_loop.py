"""Closed loop with the real simulator, controller and gate: persistent misses must turn the gate red.

"Good" perception is the shipped demo candidate's ONNX Runtime engine when the repository has it,
otherwise the oracle (ground-truth boxes through the same perception interface). The bad
candidates wrap the good one: never reporting trucks, or reporting nothing in fog. These are
persistent misses; frame-independent random drops are shown to be absorbed instead (NOTES.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from adas.datasets.generator import DatagenConfig
from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.gate import evaluate_gate
from adas.simulation.metrics import RunRecord
from adas.simulation.perception import Fault, PerceptionSpec
from adas.simulation.scenario_templates import ACTOR_SIZE_M, OSC_CATEGORY, Condition
from adas.simulation.shards import EpisodeSettings
from adas.simulation.sweep import SweepResult, run_sweep
from adas.storage import LocalArtifactStore

pytestmark = pytest.mark.slow

DURATION_S = 14.0


def _run(run_id: str, category: str, actor: str, weather: str, speed: float, seed: int, **kw) -> EpisodeSpec:  # type: ignore[no-untyped-def]
    """A run of the category's shipped file (``config/scenarios/<category>.xosc``) with these parameters."""
    severity = 3 if weather != "clear" else 1
    length, width = ACTOR_SIZE_M[actor]
    parameters = {
        "EgoSpeed": f"{speed:g}",
        "ActorType": OSC_CATEGORY[actor],
        "ActorLength": f"{length:g}",
        "ActorWidth": f"{width:g}",
        **Condition(weather=weather, lighting="day", severity=severity).parameters(),
    }
    if category == "cut_in":
        parameters |= {
            "GapTime": f"{kw['gap_time_s']:g}",
            "ActorSpeedDelta": f"{kw['actor_speed_delta_mps']:g}",
            "CutInFrom": "1" if seed % 2 else "-1",
        }
    return EpisodeSpec(
        run_id=run_id,
        category=category,  # type: ignore[arg-type]
        scenario="highway",
        density="sparse",
        weather=weather,
        lighting="day",
        severity=severity,
        seed=seed,
        duration_s=DURATION_S,
        ego_speed_mps=speed,
        actor_type=actor,  # type: ignore[arg-type]
        xosc=f"{category}.xosc",
        parameters=parameters,
        **kw,
    )


RUNS = [
    _run("cut_in-truck-a", "cut_in", "truck", "clear", 25.0, 11, gap_time_s=1.0, actor_speed_delta_mps=6.0),
    _run("cut_in-truck-b", "cut_in", "truck", "clear", 22.0, 12, gap_time_s=1.5, actor_speed_delta_mps=4.0),
    _run("stopped_lead-truck", "stopped_lead", "truck", "clear", 25.0, 13),
    _run("cut_in-car-fog", "cut_in", "car", "fog", 25.0, 14, gap_time_s=1.2, actor_speed_delta_mps=6.0),
    _run("stopped_lead-car-fog", "stopped_lead", "car", "fog", 22.0, 15),
    _run("cut_in-moto", "cut_in", "motorcycle", "clear", 25.0, 16, gap_time_s=1.2, actor_speed_delta_mps=5.0),
]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sim-store")


@pytest.fixture(scope="module")
def sweeps(
    store_root: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig, trained_engine
) -> dict[str, SweepResult]:  # type: ignore[no-untyped-def]
    store = LocalArtifactStore(root=str(store_root))
    settings = EpisodeSettings.from_configs(sim_cfg, datagen)
    if trained_engine is not None:
        path, contract = trained_engine
        good = PerceptionSpec(label="good", kind="engine", contract=contract)
    else:
        path, good = None, PerceptionSpec(label="good", kind="oracle")
    variants = {
        "good": good,
        "no_trucks": good.with_faults("no_trucks", Fault(kind="drop_class", classes=["truck"])),
        "blind_in_fog": good.with_faults("blind_in_fog", Fault(kind="blind_in_weather", weathers=["fog"])),
        "random_drops": good.with_faults("random_drops", Fault(kind="random_drop", p=0.3)),
    }
    return {
        name: run_sweep(store, RUNS, spec, settings, engine_path=path, shards=2, processes=2)
        for name, spec in variants.items()
    }


def _as(records: list[RunRecord], model: str) -> list[RunRecord]:
    return [r.model_copy(update={"model": model}) for r in records]


def _collided(res: SweepResult) -> set[str]:
    return {r.spec.run_id for r in res.records if r.metrics.collisions}


def test_good_perception_passes_every_check_that_six_runs_can_decide(
    sweeps: dict[str, SweepResult], sim_cfg: SimulationConfig
) -> None:
    """Semantics changed with the three-valued gate (this was green): 6 collision-free runs
    cannot rule out a 5-point collision-rate increase, so the pooled rates are amber; nothing
    fails and everything else passes."""
    good = sweeps["good"].records
    assert _collided(sweeps["good"]) == set()
    verdict = evaluate_gate(_as(good, "candidate"), _as(good, "production"), sim_cfg.gate)
    assert verdict.verdict == "amber" and not verdict.failed_checks, verdict.rationale
    assert {c.name for c in verdict.amber_checks} == {"collision_rate_increase", "failure_rate_increase"}


def test_never_detecting_trucks_fails_the_gate_on_the_same_seeds(
    sweeps: dict[str, SweepResult], sim_cfg: SimulationConfig
) -> None:
    collided = _collided(sweeps["no_trucks"])
    assert {"cut_in-truck-a", "cut_in-truck-b", "stopped_lead-truck"} <= collided
    assert not collided & {"cut_in-car-fog", "stopped_lead-car-fog", "cut_in-moto"}
    assert all(
        r.metrics.collision_with == "truck" for r in sweeps["no_trucks"].records if r.metrics.collisions
    )
    verdict = evaluate_gate(
        _as(sweeps["no_trucks"].records, "candidate"), _as(sweeps["good"].records, "production"), sim_cfg.gate
    )
    assert not verdict.green
    failed = {(c.scope, c.name) for c in verdict.failed_checks}
    assert ("cut_in", "collisions") in failed and ("stopped_lead", "collisions") in failed
    assert "cut_in-truck-a" in verdict.rationale


def test_going_blind_in_fog_is_not_green(sweeps: dict[str, SweepResult], sim_cfg: SimulationConfig) -> None:
    """Fog is outside the NCAP-style conditions: 2 collisions in 6 runs against none are evidence of
    worse, not yet of 5 points worse (this was red): amber, naming the runs."""
    assert _collided(sweeps["blind_in_fog"]) == {"cut_in-car-fog", "stopped_lead-car-fog"}
    verdict = evaluate_gate(
        _as(sweeps["blind_in_fog"].records, "candidate"),
        _as(sweeps["good"].records, "production"),
        sim_cfg.gate,
    )
    assert not verdict.green and verdict.verdict == "amber"
    assert ("all", "collision_rate_increase") in {(c.scope, c.name) for c in verdict.amber_checks}
    assert "stopped_lead-car-fog" in verdict.rationale and "fog/day" in verdict.rationale


def test_frame_independent_drops_are_absorbed_by_tracker_and_controller(
    sweeps: dict[str, SweepResult],
) -> None:
    """30 % of detections dropped at random, frame by frame: no collision. The gate's discrimination
    above therefore comes from persistent misses, not from frame recall."""
    assert _collided(sweeps["random_drops"]) == set()
    good_det = sum(r.metrics.mean_detections for r in sweeps["good"].records)
    drop_det = sum(r.metrics.mean_detections for r in sweeps["random_drops"].records)
    assert drop_det < 0.85 * good_det


def test_failing_runs_and_only_those_have_short_clips(
    sweeps: dict[str, SweepResult], sim_cfg: SimulationConfig, store_root: Path
) -> None:
    res = sweeps["no_trucks"]
    assert set(res.clip_keys) == _collided(res)
    assert not sweeps["good"].clip_keys
    data = (store_root / res.clip_keys["stopped_lead-truck"]).read_bytes()
    gif = Image.open(io.BytesIO(data))
    c = sim_cfg.clips
    assert gif.format == "GIF" and 2 <= gif.n_frames <= int(c.seconds * c.fps / c.frame_step) + 2
    assert gif.size[0] == 384 * c.scale
    assert len(data) < 2_000_000
