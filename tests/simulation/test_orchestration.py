"""Sweep planning, shard checkpoints (resume after a crash) and bit-for-bit reproducibility."""

from __future__ import annotations

import io
from pathlib import Path

import polars as pl
import pytest

from adas.datasets.generator import DatagenConfig
from adas.simulation.config import SimulationConfig
from adas.simulation.episode import EpisodeSpec
from adas.simulation.orchestration import main
from adas.simulation.perception import Fault, PerceptionSpec
from adas.simulation.planning import plan_category, plan_runs
from adas.simulation.shards import (
    CHECKPOINT_PREFIX,
    EpisodeSettings,
    ShardResult,
    ShardSpec,
    load_checkpoint,
    make_shards,
    run_shard,
)
from adas.simulation.sweep import SweepError, run_sweep
from adas.storage import LocalArtifactStore

ORACLE = PerceptionSpec(label="production", kind="oracle")


def _short_runs(cfg: SimulationConfig, seconds: float = 5.0) -> list[EpisodeSpec]:
    runs = plan_category(cfg, "cut_in", 2) + plan_category(cfg, "stopped_lead", 2)
    return [r.model_copy(update={"duration_s": seconds}) for r in runs]


def _summary_bytes(records) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    pl.DataFrame([r.row() for r in records], infer_schema_length=None).write_parquet(buf)
    return buf.getvalue()


def test_plan_is_deterministic_balanced_and_seeded_per_run(sim_cfg: SimulationConfig) -> None:
    a, b = plan_runs(sim_cfg, "demo"), plan_runs(sim_cfg, "demo")
    assert a == b
    cut_in = [r for r in a if r.category == "cut_in"]
    assert len(cut_in) == sim_cfg.sweeps["demo"].runs["cut_in"]
    types = [r.actor_type for r in cut_in]
    assert max(types.count(t) for t in set(types)) - min(types.count(t) for t in set(types)) <= 1
    assert len({r.seed for r in a}) == len(a)
    assert len({r.condition for r in cut_in}) == len(sim_cfg.categories["cut_in"].conditions)
    with pytest.raises(ValueError, match="unknown sweep size 'huge'"):
        plan_runs(sim_cfg, "huge")


def test_shard_key_names_engine_runs_and_settings(sim_cfg: SimulationConfig, datagen: DatagenConfig) -> None:
    st = EpisodeSettings.from_configs(sim_cfg, datagen)
    runs = _short_runs(sim_cfg)
    s1 = make_shards(runs, ORACLE, st, 2)
    s2 = make_shards(runs, ORACLE, st, 2)
    assert [s.key for s in s1] == [s.key for s in s2]
    other_engine = PerceptionSpec(label="production", kind="engine", engine_sha256="ab" * 32)
    assert make_shards(runs, other_engine, st, 2)[0].key != s1[0].key
    slower = EpisodeSettings.from_configs(sim_cfg.model_copy(update={"policy_frequency_hz": 10}), datagen)
    assert make_shards(runs, ORACLE, slower, 2)[0].key != s1[0].key
    assert sorted(r.run_id for s in s1 for r in s.runs) == sorted(r.run_id for r in runs)


def test_engine_shard_refuses_a_different_engine_file(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig, plumbing_engine
) -> None:  # type: ignore[no-untyped-def]
    path, contract = plumbing_engine
    spec = PerceptionSpec(label="candidate", kind="engine", engine_sha256="0" * 64, contract=contract)
    shard = make_shards(_short_runs(sim_cfg)[:1], spec, EpisodeSettings.from_configs(sim_cfg, datagen), 1)[0]
    with pytest.raises(ValueError, match="sha256"):
        run_shard(str(path), shard)


def test_crashed_sweep_resumes_from_checkpoints_and_matches_a_clean_run(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    st = EpisodeSettings.from_configs(sim_cfg, datagen)
    runs = _short_runs(sim_cfg)
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    calls: list[int] = []

    def crashing(engine: str | None, spec: ShardSpec) -> ShardResult:
        calls.append(spec.shard_index)
        if spec.shard_index == 1:
            raise RuntimeError("node lost")
        return run_shard(engine, spec)

    with pytest.raises(SweepError, match=r"shard 1: RuntimeError: node lost.*1 of 3 are checkpointed"):
        run_sweep(store, runs, ORACLE, st, shards=3, runner=crashing)
    assert calls == [0, 1]
    assert len([k for k in store.list_keys(CHECKPOINT_PREFIX) if k.endswith("result.json")]) == 1

    calls.clear()

    def counting(engine: str | None, spec: ShardSpec) -> ShardResult:
        calls.append(spec.shard_index)
        return run_shard(engine, spec)

    resumed = run_sweep(store, runs, ORACLE, st, shards=3, runner=counting)
    assert calls == [1, 2], "the checkpointed shard 0 must not be recomputed"
    assert resumed.shards_reused == [0] and resumed.shards_computed == [1, 2]
    assert [r.spec.run_id for r in resumed.records] == [r.run_id for r in runs]

    again = run_sweep(store, runs, ORACLE, st, shards=3, runner=counting)
    assert again.shards_reused == [0, 1, 2] and again.episodes_computed == 0

    clean = run_sweep(
        LocalArtifactStore(root=str(tmp_path / "clean")), runs, ORACLE, st, shards=3, processes=1
    )
    assert _summary_bytes(clean.records) == _summary_bytes(resumed.records)


@pytest.mark.slow
def test_same_seeds_identical_summary_across_process_counts(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig, plumbing_engine
) -> None:  # type: ignore[no-untyped-def]
    """The engine in the loop, 1 process vs 2 spawned processes: identical summary bytes and clips."""
    path, contract = plumbing_engine
    spec = PerceptionSpec(label="candidate", kind="engine", engine_sha256=None, contract=contract)
    spec = spec.with_faults("candidate", Fault(kind="random_drop", p=0.2))
    st = EpisodeSettings.from_configs(sim_cfg, datagen)
    runs = _short_runs(sim_cfg, seconds=6.0)[:3]
    one = run_sweep(
        LocalArtifactStore(root=str(tmp_path / "a")), runs, spec, st, engine_path=path, shards=3, processes=1
    )
    two_store = LocalArtifactStore(root=str(tmp_path / "b"))
    two = run_sweep(two_store, runs, spec, st, engine_path=path, shards=3, processes=2)
    assert two.shards_computed == [0, 1, 2]
    assert _summary_bytes(one.records) == _summary_bytes(two.records)
    assert one.clip_keys == two.clip_keys
    for key in one.clip_keys.values():
        assert (tmp_path / "a" / key).read_bytes() == (tmp_path / "b" / key).read_bytes()


def test_a_shard_runs_as_a_command_with_the_checkpoint_layout(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    st = EpisodeSettings.from_configs(sim_cfg, datagen)
    blind = ORACLE.with_faults("blind", Fault(kind="blind_in_weather", weathers=["clear", "fog"]))
    runs = [r.model_copy(update={"duration_s": 8.0}) for r in plan_category(sim_cfg, "stopped_lead", 1)]
    (shard,) = make_shards(runs, blind, st, 1)
    spec_file = tmp_path / "shard.json"
    spec_file.write_text(shard.model_dump_json())
    out = tmp_path / "pod-out"
    assert main(["--spec", str(spec_file), "--out", str(out)]) == 0
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        store.put_file(f"{CHECKPOINT_PREFIX}/{shard.key}/{path.relative_to(out).as_posix()}", path)
    loaded = load_checkpoint(store, shard.key)
    assert loaded is not None and loaded.records[0].metrics.collisions == 1
    assert loaded.records[0].clip_key == f"clips/{runs[0].run_id}.gif"
    assert store.exists(f"{CHECKPOINT_PREFIX}/{shard.key}/{loaded.records[0].clip_key}")
    # a sweep over the same work now reuses the pod's result
    res = run_sweep(store, runs, blind, st, shards=1, processes=1)
    assert res.shards_reused == [0] and res.records == loaded.records
