"""The simulation assets through Dagster, on tiny replay data and a real (untrained) ONNX engine.

The untrained engine reports nothing, so the ego drives blind: the sweep must produce collisions,
clips and a red verdict whose blocking check fails, and a second materialization must reuse every
checkpointed shard.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from adas.datasets.coco import REPLAY_SPLIT, split_file, write_coco
from adas.datasets.config import config_hash, dataset_tag, load_datagen_config
from adas.datasets.generator import _assemble, run_scene
from adas.datasets.scene_plan import plan_scenes
from adas.detector.bundle import build_contract
from adas.intake.contract import Contract, Lineage
from adas.intake.refs import CandidateRef, ReplayBundleRef, StoredFile
from adas.intake.stored import read_file_index, write_file_index
from adas.packaging.refs import EngineRef
from adas.simulation.scenarios import validate_file
from adas.storage import LocalArtifactStore
from adas_assets.partitions import TARGET_PARTITIONS
from adas_assets.simulation.assets import simulation_assets, simulation_checks
from resources.io_manager import ArtifactJsonIOManager, decode_value, encode_value, value_key
from resources.simulation_shards import SimulationShardRunner

pytestmark = pytest.mark.slow
CELL = "x86-cpu|fp32"


# Upstream values are written to the store by the tests and read through the IO manager.
UPSTREAM = [
    dg.AssetSpec("engine", partitions_def=TARGET_PARTITIONS),
    dg.AssetSpec("production_engine", partitions_def=TARGET_PARTITIONS),
    dg.AssetSpec("replay_log_bundles"),
]


def _stored(store: LocalArtifactStore, key: str, data: bytes) -> StoredFile:
    s = store.put_bytes(key, data)
    return StoredFile(key=s.key, uri=s.uri, sha256=s.sha256, size=s.size)


def _engine_ref(
    store: LocalArtifactStore, onnx: Path, contract: Contract, device: str, precision: str
) -> EngineRef:
    cand = CandidateRef(
        bundle_sha256="c" * 64,
        prefix=f"candidates/{contract.task}/{contract.version}/cccccccccccc",
        files={},
        contract=contract,
        lineage=Lineage(training_run_id="test", dataset_tag="sim-tiny", git_sha="0000000"),
        parameter_count=1,
        received_at="2025-01-01T00:00:00+00:00",
        source="test",
    )
    ref = EngineRef(
        device=device,
        precision=precision,
        runtime="onnxruntime",
        candidate=cand,
        engine=StoredFile(key="x", uri="x", sha256="0", size=0),
    )
    engine = _stored(store, f"{ref.prefix}/model.onnx", onnx.read_bytes())
    return ref.model_copy(update={"engine": engine})


def _replay_bundle(store: LocalArtifactStore, tmp: Path) -> ReplayBundleRef:
    """Two short replay sequences rendered by the real data generator."""
    cfg = load_datagen_config()
    specs = [s for s in plan_scenes(cfg, "tiny") if s.split == REPLAY_SPLIT]
    results = {s.scene_index: run_scene(cfg, s, tmp) for s in specs}
    tag = dataset_tag(cfg, "tiny")
    manifests = _assemble(cfg, specs, results, tag, config_hash(cfg))
    write_coco(split_file(tmp, REPLAY_SPLIT), manifests[REPLAY_SPLIT])
    prefix = f"datasets/{tag}"
    index = write_file_index(store, prefix, store.put_tree(prefix, tmp))
    manifest = read_file_index(store, index)["replay_sequences.json"]
    return ReplayBundleRef(dataset_tag=tag, manifest=manifest, sequences=[], file_index=index)


@pytest.fixture(scope="module")
def materialized(tmp_path_factory: pytest.TempPathFactory, plumbing_engine):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("sim-assets")
    store = LocalArtifactStore(root=str(root / "artifacts"))
    io_manager = ArtifactJsonIOManager(store=store)
    onnx, contract = plumbing_engine
    production = build_contract(
        version="0.0.0", model_name="plumbing", task=contract.task, normalization=contract.input.normalization
    )
    for key in (CELL, "x86-cpu|fp16"):
        device, precision = key.split("|")
        mk = dg.MultiPartitionKey({"device": device, "precision": precision})
        for name, c in (("engine", contract), ("production_engine", production)):
            ref = _engine_ref(store, onnx, c, device, precision)
            store.put_bytes(value_key(dg.AssetKey(name), mk, TARGET_PARTITIONS), encode_value(ref))
    replay_dir = root / "replay"
    replay_dir.mkdir()
    bundle = _replay_bundle(store, replay_dir)
    store.put_bytes(value_key(dg.AssetKey("replay_log_bundles"), None, None), encode_value(bundle))
    resources = {"artifact_store": store, "io_manager": io_manager, "sim_shards": SimulationShardRunner()}
    run_config = dg.RunConfig(ops={"closed_loop_simulation": {"config": {"sweep": "smoke", "processes": 2}}})
    with dg.instance_for_test() as instance:
        first = dg.materialize(
            [*UPSTREAM, *simulation_assets, *simulation_checks],
            selection=dg.AssetSelection.assets(*simulation_assets),
            partition_key=CELL,
            resources=resources,
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )
        again = dg.materialize(
            [*UPSTREAM, *simulation_assets, *simulation_checks],
            selection=dg.AssetSelection.assets("closed_loop_simulation"),
            partition_key=CELL,
            resources=resources,
            run_config=run_config,
            instance=instance,
            raise_on_error=False,
        )
        unsupported = dg.materialize(
            [*UPSTREAM, *simulation_assets, *simulation_checks],
            selection=dg.AssetSelection.assets("replay_metrics"),
            partition_key="x86-cpu|fp16",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        yield store, first, again, unsupported


def _value(store: LocalArtifactStore, name: str):  # type: ignore[no-untyped-def]
    mk = dg.MultiPartitionKey({"device": "x86-cpu", "precision": "fp32"})
    return decode_value(store.get_bytes(value_key(dg.AssetKey(name), mk, TARGET_PARTITIONS)))


def _metadata(result: dg.ExecuteInMemoryResult, name: str) -> dict:
    (mat,) = [m for m in result.asset_materializations_for_node(name)]
    return mat.metadata


def test_definitions_with_the_simulation_group_load(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path))
    defs = dg.Definitions(
        assets=[*UPSTREAM, *simulation_assets],
        asset_checks=simulation_checks,
        resources={
            "artifact_store": store,
            "io_manager": ArtifactJsonIOManager(store=store),
            "sim_shards": SimulationShardRunner(),
        },
    )
    dg.Definitions.validate_loadable(defs)
    groups = {a.key.to_user_string(): a.group_names_by_key[a.key] for a in simulation_assets}
    assert set(groups.values()) == {"simulation"}


def test_replay_and_scenario_library(materialized) -> None:  # type: ignore[no-untyped-def]
    store, first, _, _ = materialized
    for name in ("replay_metrics", "scenario_library", "closed_loop_simulation", "sim_verdict"):
        assert first.asset_materializations_for_node(name), f"{name} was not materialized"
    replay = _value(store, "replay_metrics")
    assert replay.prefix == "models/detection-2d/0.0.1/x86-cpu/fp32"
    report = json.loads(store.get_bytes(replay.files["replay_report.json"].key))
    assert len(report["candidate"]["sequences"]) == 2
    assert (
        pl.read_parquet(io.BytesIO(store.get_bytes(replay.files["replay_segments.parquet"].key))).height >= 4
    )
    md = _metadata(first, "replay_metrics")
    assert {"totals", "sequences", "time_to_first_detection", "flagged_segments"} <= set(md)
    lib = _value(store, "scenario_library")
    assert lib.scenarios, "the candidate's worst segments always seed the library"
    for rel, f in lib.files.items():
        if rel.endswith((".xosc", ".xodr")):
            validate_file(store.fetch(f.key))


def test_closed_loop_outputs_beside_the_pack(materialized) -> None:  # type: ignore[no-untyped-def]
    store, first, _, _ = materialized
    sim = _value(store, "closed_loop_simulation")
    assert sim.prefix == "models/detection-2d/0.0.1/x86-cpu/fp32/simulation"
    df = pl.read_parquet(io.BytesIO(store.get_bytes(sim.files["sim_summary.parquet"].key)))
    assert df.height == 2 * sim.runs and set(df["model"]) == {"candidate", "production"}
    assert df.filter(pl.col("source").str.starts_with("library:")).height == 2
    assert {"collisions", "min_ttc_s", "driving_score", "near_misses", "p95_abs_jerk_mps3"} <= set(df.columns)
    assert store.get_bytes(sim.files["violations_heatmap.png"].key)[:4] == b"\x89PNG"
    assert any(k.startswith("scenarios/") for k in sim.files)
    # a blind ego collides: every collision has its clip beside the pack
    collided = df.filter(pl.col("collisions") > 0)
    assert collided.height > 0 and collided["clip_key"].null_count() == 0
    assert all(store.get_bytes(k)[:3] == b"GIF" for k in collided["clip_key"])
    md = _metadata(first, "closed_loop_simulation")
    assert {"summary", "violations_heatmap", "failures", "failure_clips"} <= set(md)


def test_red_verdict_with_rationale_and_failed_blocking_check(materialized) -> None:  # type: ignore[no-untyped-def]
    store, first, _, _ = materialized
    verdict = _value(store, "sim_verdict")
    assert not verdict.green and "RED" in verdict.rationale
    assert any(c.name == "collisions" and not c.passed for c in verdict.checks)
    body = json.loads(store.get_bytes(verdict.files["sim_verdict.json"].key))
    assert body["verdict"] == "red"
    (check,) = first.get_asset_check_evaluations()
    assert check.check_name == "sim_gate_is_green" and not check.passed
    # blocking: the run that materialized the red verdict fails on the check
    assert not first.success
    assert any(
        "blocking asset check failed" in str(e.event_specific_data.error)
        for e in first.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def test_rematerializing_reuses_every_checkpointed_shard(materialized) -> None:  # type: ignore[no-untyped-def]
    _, _, again, _ = materialized
    assert again.success
    assert str(_metadata(again, "closed_loop_simulation")["shards"].value).startswith("0 computed")


def test_unsupported_cell_fails_naming_the_catalog(materialized) -> None:  # type: ignore[no-untyped-def]
    *_, unsupported = materialized
    assert not unsupported.success
    failure = next(e for e in unsupported.all_events if e.event_type_value == "STEP_FAILURE")
    assert "targets.yaml" in str(failure.event_specific_data.error)
