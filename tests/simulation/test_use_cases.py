"""The simulation use-cases without Dagster: input checks, code versions, sweep choice, and the
scenario library and sim verdict through a local artifact store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adas.catalog import UnsupportedTargetError, load_catalog
from adas.cell import Cell
from adas.intake.stored import read_json, stored_file
from adas.packaging.refs import EngineRef
from adas.simulation.closed_loop_simulation import SIM_SWEEP_ENV, choose_sweep
from adas.simulation.config import SimulationConfig
from adas.simulation.refs import ReplayMetricsRef, SimulationRef
from adas.simulation.replay_report import FlaggedSegment
from adas.simulation.scenario_library import build_scenario_library
from adas.simulation.sequential import SequentialLook, SequentialRecord
from adas.simulation.sim_verdict import decide_sim_verdict
from adas.simulation.steps import SimulationInputError, code_version, json_bytes, require_simulatable
from adas.storage import LocalArtifactStore
from tests.simulation.test_metrics_gate import _record
from tests.simulation.test_scenarios import _segment

CATALOG = load_catalog()
CELL = Cell("x86-cpu", "fp32")
PREFIX = "models/detection-2d/1.0.0/x86-cpu/fp32"


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(root=str(tmp_path / "artifacts"))


def test_only_supported_cells_and_onnx_runtime_engines_simulate() -> None:
    ort, trt = EngineRef.model_construct(runtime="onnxruntime"), EngineRef.model_construct(runtime="tensorrt")
    require_simulatable(CELL, CATALOG, ort, ort)
    with pytest.raises(SimulationInputError, match="tensorrt engine cannot run in this CPU simulator"):
        require_simulatable(CELL, CATALOG, ort, trt)
    with pytest.raises(UnsupportedTargetError, match=r"targets\.yaml"):
        require_simulatable(Cell("x86-cpu", "fp16"), CATALOG)


def test_code_versions_follow_their_config_section(sim_cfg: SimulationConfig) -> None:
    assert code_version(None, "replay") == "invalid-config"
    versions = {s: code_version(sim_cfg, s) for s in ("replay", "scenarios", "closed_loop", "gate")}
    assert len(set(versions.values())) == 4 and versions["gate"].startswith("gate-v")
    other_gate = sim_cfg.model_copy(update={"gate": sim_cfg.gate.model_copy(update={"min_runs": 99})})
    assert code_version(other_gate, "gate") != versions["gate"]
    assert code_version(other_gate, "replay") == versions["replay"]


def test_the_sweep_comes_from_run_config_then_the_environment_then_demo(sim_cfg: SimulationConfig) -> None:
    assert choose_sweep(sim_cfg, "smoke", {SIM_SWEEP_ENV: "benchmark"}) == "smoke"
    assert choose_sweep(sim_cfg, None, {SIM_SWEEP_ENV: "smoke"}) == "smoke"
    assert choose_sweep(sim_cfg, None, {}) == "demo"
    with pytest.raises(SimulationInputError, match=r"'huge' \(from run config\) is not in"):
        choose_sweep(sim_cfg, "huge", {})
    with pytest.raises(SimulationInputError, match=r"from \$ADAS_SIM_SWEEP"):
        choose_sweep(sim_cfg, None, {SIM_SWEEP_ENV: "huge"})


def _replay_ref(store: LocalArtifactStore, flagged: list[FlaggedSegment]) -> ReplayMetricsRef:
    body = json_bytes([f.model_dump(mode="json") for f in flagged])
    return ReplayMetricsRef(
        device=CELL.device,
        precision=CELL.precision,
        version="1.0.0",
        production_version="0.9.0",
        prefix=PREFIX,
        files={
            "flagged_segments.json": stored_file(store, f"{PREFIX}/replay/flagged_segments.json", data=body)
        },
        candidate={},
        production={},
        flagged=len(flagged),
    )


def test_scenario_library_stores_validated_files_and_an_index_of_runs(
    store: LocalArtifactStore, sim_cfg: SimulationConfig
) -> None:
    logged: list[str] = []
    result = build_scenario_library(
        store,
        cell=CELL,
        catalog=CATALOG,
        cfg=sim_cfg,
        replay_metrics=_replay_ref(store, [_segment("cut_in")]),
        log=logged.append,
    )
    ref = result.ref
    assert ref.prefix == f"{PREFIX}/scenarios" and ref.scenarios == [result.templates[0].scenario_id]
    t = result.templates[0]
    assert {f"{t.segment_id}/{t.xosc}", f"{t.segment_id}/{t.sweep_xosc}", f"{t.segment_id}/road.xodr"} <= set(
        ref.files
    )
    index = read_json(store, ref.index)
    assert len(index["runs"]) == ref.runs == len(result.runs) == t.sweep_size
    assert all(r["source"] == f"library:{t.scenario_id}" for r in index["runs"])
    assert logged == [f"1 scenarios, {ref.runs} concrete runs, {len(ref.files)} files validated"]


def test_an_empty_library_stores_only_its_index(store: LocalArtifactStore, sim_cfg: SimulationConfig) -> None:
    result = build_scenario_library(
        store, cell=CELL, catalog=CATALOG, cfg=sim_cfg, replay_metrics=_replay_ref(store, [])
    )
    assert result.ref.files == {} and result.ref.runs == 0
    assert read_json(store, result.ref.index) == {"runs": [], "scenarios": [], "sweep_points": {}}


def _simulation_ref(
    store: LocalArtifactStore, candidate_collides: bool, sequential: SequentialRecord | None = None
) -> SimulationRef:
    # The colliding run is in clear weather: an NCAP-style cut-in scene, red whatever the sample.
    records = [
        _record(
            model,
            f"cut_in-{i:03d}",
            "cut_in",
            model == "candidate" and candidate_collides and i == 1,
            weather="clear" if i == 1 else "fog",
        )
        for model in ("production", "candidate")
        for i in range(4)
    ]
    runs = json_bytes([r.model_dump(mode="json", exclude={"wall_s", "cpu_s"}) for r in records])
    prefix = f"{PREFIX}/simulation"
    return SimulationRef(
        device=CELL.device,
        precision=CELL.precision,
        version="1.0.0",
        production_version="0.9.0",
        sweep="smoke",
        prefix=prefix,
        files={"runs.json": stored_file(store, f"{prefix}/runs.json", data=runs)},
        clips={},
        candidate={},
        production={},
        runs=4,
        shards_computed=1,
        shards_reused=0,
        sequential=sequential,
    )


@pytest.mark.parametrize(("collides", "verdict"), [(False, "amber"), (True, "red")])
def test_sim_verdict_is_stored_beside_the_runs(
    store: LocalArtifactStore, sim_cfg: SimulationConfig, collides: bool, verdict: str
) -> None:
    """4 runs without a collision cannot rule out a 5-point collision-rate increase: amber (this
    was green before the three-valued gate). A collision in a clear cut-in scene is red."""
    simulation = _simulation_ref(store, candidate_collides=collides)
    result = decide_sim_verdict(store, cell=CELL, catalog=CATALOG, cfg=sim_cfg, simulation=simulation)
    ref = result.ref
    assert ref.verdict == result.verdict.verdict == verdict and ref.green is result.verdict.green is False
    assert ref.runs == 4 and ref.sequential is None
    assert ref.version == "1.0.0" and ref.production_version == "0.9.0"
    body = json.loads(store.get_bytes(ref.files["sim_verdict.json"].key))
    assert (
        body["verdict"] == ref.status == verdict and body["sweep"] == "smoke" and body["device"] == "x86-cpu"
    )
    assert store.get_bytes(ref.files["sim_verdict.md"].key).decode() == ref.rationale
    if collides:
        assert any(c.scope == "cut_in" and c.status == "fail" for c in ref.checks)
    else:
        assert {c.name for c in ref.checks if c.status == "amber"} == {
            "collision_rate_increase",
            "failure_rate_increase",
        }


def test_a_sequential_simulation_is_judged_at_its_last_look(
    store: LocalArtifactStore, sim_cfg: SimulationConfig
) -> None:
    looks = [
        SequentialLook(runs=2, confidence=0.9999, verdict="amber", rates="amber"),
        SequentialLook(runs=4, confidence=0.99, verdict="amber", rates="amber"),
    ]
    record = SequentialRecord(
        planned_runs=2, batch_runs=2, max_runs=4, schedule=[2, 4], looks=looks, stopped="budget spent"
    )
    simulation = _simulation_ref(store, candidate_collides=False, sequential=record)
    ref = decide_sim_verdict(store, cell=CELL, catalog=CATALOG, cfg=sim_cfg, simulation=simulation).ref
    assert ref.sequential == record and ref.verdict == "amber"
    (rate,) = [c for c in ref.checks if c.name == "collision_rate_increase" and c.scope == "all"]
    assert "(99.0% Newcombe interval)" in rate.limit
    assert "Sequential rule: 2 planned runs, 2 added in 1 batch(es)" in ref.rationale
