"""Pinned reads (#18 item 5): an artifact read downstream is verified against the sha256 recorded
upstream (the materialization record, the descriptor, the registry entry), never only against the
store's own record, which an attacker who rewrites the bytes rewrites too."""

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from adas.detector.bundle import build_contract
from adas.evaluation.cell_evaluation import open_model
from adas.intake.contract import Lineage, Normalization
from adas.intake.refs import CandidateRef
from adas.intake.stored import fetch_file, stored_file
from adas.packaging.refs import EngineRef
from adas.storage import (
    SIDECAR_SUFFIX,
    ArtifactIntegrityError,
    ArtifactStore,
    LocalArtifactStore,
    PinnedHashMismatchError,
    S3ArtifactStore,
    sha256_bytes,
)
from adas.values import decode_value, encode_value
from resources.io_manager import ArtifactJsonIOManager, read_value, value_key

ENGINE_BYTES = b"engine built by the pipeline"
EVIL_BYTES = b"engine swapped in by an attacker"
CONTRACT = build_contract(
    version="1.0.0",
    model_name="pinned",
    task="vehicle-detection-2d",
    normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
)


def rewrite(store: ArtifactStore, key: str, data: bytes) -> None:
    """What an attacker with write access to the store does: new bytes, and a store record
    (``.sha256`` sidecar, S3 object metadata) rewritten to match them."""
    digest = sha256_bytes(data)
    if isinstance(store, LocalArtifactStore):
        path = Path(store.root) / key
        path.write_bytes(data)
        path.with_name(path.name + SIDECAR_SUFFIX).write_text(f"{digest}  {path.name}\n")
    else:
        assert isinstance(store, S3ArtifactStore)
        obj_key = f"{store.prefix}/{key}"
        store.client.put_object(Bucket=store.bucket, Key=obj_key, Body=data, Metadata={"sha256": digest})
    assert store.recorded_sha256(key) == digest and store.get_bytes(key) == data  # the sidecar agrees


# --------------------------------------------------------------------------- the store


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(root=str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"adas-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3ArtifactStore(
        S3Resource(endpoint_url=endpoint, region_name="us-east-1").get_client,
        bucket=bucket,
        prefix="gold",
        cache_dir=str(tmp_path / "cache"),
    )


def test_a_pinned_read_refuses_bytes_whose_store_record_was_rewritten(any_store: ArtifactStore) -> None:
    key = "models/t/1.0.0/x86-cpu/fp32/model.onnx"
    engine = stored_file(any_store, key, data=ENGINE_BYTES)
    assert fetch_file(any_store, engine).read_bytes() == ENGINE_BYTES  # cached copy on S3
    rewrite(any_store, key, EVIL_BYTES)
    for read in (lambda: fetch_file(any_store, engine), lambda: any_store.get_bytes(key, engine.sha256)):
        with pytest.raises(PinnedHashMismatchError) as exc:
            read()
        message = str(exc.value)
        assert any_store.uri(key) in message
        assert engine.sha256 in message and sha256_bytes(EVIL_BYTES) in message
    # Unpinned, the rewritten record is all there is: exactly why downstream reads pass a pin.
    assert any_store.get_bytes(key) == EVIL_BYTES


# --------------------------------------------------------------------------- through Dagster


def _engine_ref(store: ArtifactStore) -> EngineRef:
    model = stored_file(store, "candidates/t/1.0.0/abc/model.pt2", data=b"weights")
    candidate = CandidateRef(
        bundle_sha256="b" * 64,
        prefix="candidates/t/1.0.0/abc",
        files={"model.pt2": model},
        contract=CONTRACT,
        lineage=Lineage(training_run_id="r", dataset_tag="sim-test", git_sha="abcdef0"),
        parameter_count=1,
        received_at="2026-01-01T00:00:00+00:00",
        source="test",
    )
    key = "models/vehicle-detection-2d/1.0.0/x86-cpu/fp32/model.onnx"
    engine = stored_file(store, key, data=ENGINE_BYTES)
    return EngineRef(
        device="x86-cpu", precision="fp32", runtime="onnxruntime", candidate=candidate, engine=engine
    )


@dg.asset
def engine(artifact_store: dg.ResourceParam[ArtifactStore]) -> EngineRef:
    return _engine_ref(artifact_store)


@dg.asset
def evaluation(engine: EngineRef, artifact_store: dg.ResourceParam[ArtifactStore]) -> str:
    """Stands in for evaluation: opens the engine through the core's engine read."""
    open_model(artifact_store, "candidate", engine, threads=1)  # the engine bytes are no model
    return "evaluated"


@dg.asset
def engine_bytes(engine: EngineRef, artifact_store: dg.ResourceParam[ArtifactStore]) -> str:
    return fetch_file(artifact_store, engine.engine).read_text()


def _messages(result: dg.ExecuteInProcessResult) -> str:
    """Every error message of the run's step failures, with their causes."""
    out = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            while error is not None:
                out.append(error.message)
                error = error.cause
    return "\n".join(out)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[tuple[LocalArtifactStore, dg.DagsterInstance, str]]:
    """The engine and a consumer materialized once: returns the store, instance and engine run."""
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    with dg.instance_for_test() as instance:
        result = dg.materialize([engine, engine_bytes], resources=_resources(store), instance=instance)
        assert result.success and result.output_for_node("engine_bytes") == ENGINE_BYTES.decode()
        yield store, instance, result.run_id


def _resources(store: ArtifactStore) -> dict:
    return {"artifact_store": store, "io_manager": ArtifactJsonIOManager(store=store)}


def test_a_tampered_engine_with_rewritten_sidecar_is_refused_at_the_next_read(pipeline) -> None:  # type: ignore[no-untyped-def]
    store, instance, engine_run = pipeline
    ref: EngineRef = decode_value(store.get_bytes(value_key(dg.AssetKey("engine"))))
    rewrite(store, ref.engine.key, EVIL_BYTES)

    for consumer in (engine_bytes, evaluation):
        result = dg.materialize(
            [engine, consumer], selection=[consumer], resources=_resources(store), instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        assert not result.success
        message = _messages(result)
        assert "PinnedHashMismatchError" in message or "sha256 mismatch" in message
        assert ref.engine.uri in message
        assert ref.engine.sha256 in message and sha256_bytes(EVIL_BYTES) in message
        assert f"the materialization of engine in run {engine_run}" in message

    # The same engine read outside a run (the core alone) is refused too.
    with pytest.raises(PinnedHashMismatchError, match=sha256_bytes(EVIL_BYTES)):
        open_model(store, "candidate", ref, threads=1)


def test_a_rewritten_descriptor_and_sidecar_are_refused_by_load_input(pipeline) -> None:  # type: ignore[no-untyped-def]
    store, instance, engine_run = pipeline
    key = value_key(dg.AssetKey("engine"))
    pinned = sha256_bytes(store.get_bytes(key))
    ref = read_value(store, instance, dg.AssetKey("engine"))
    # The attacker swaps the engine and points the descriptor at it: every store record agrees.
    evil = stored_file(store, ref.engine.key, data=EVIL_BYTES)
    forged = encode_value(ref.model_copy(update={"engine": evil}))
    rewrite(store, key, forged)

    result = dg.materialize(
        [engine, engine_bytes], selection=[engine_bytes], resources=_resources(store), instance=instance,
        raise_on_error=False,
    )  # fmt: skip
    assert not result.success
    message = _messages(result)
    assert store.uri(key) in message
    assert pinned in message and sha256_bytes(forged) in message
    assert f"the materialization of engine in run {engine_run}" in message
    # read_value (what assets use for optional inputs) behaves the same.
    with pytest.raises(PinnedHashMismatchError, match=pinned):
        read_value(store, instance, dg.AssetKey("engine"))


def test_a_record_without_value_hash_is_refused_and_no_record_reads_the_store(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    ref = _engine_ref(store)
    store.put_bytes(value_key(dg.AssetKey("engine")), encode_value(ref))
    with dg.instance_for_test() as instance:
        # No materialization record at all (a value seeded into the store): read, against the
        # store's own record, so a half-written value still fails.
        assert read_value(store, instance, dg.AssetKey("engine")) == ref
        result = dg.materialize(
            [engine, engine_bytes], selection=[engine_bytes], resources=_resources(store), instance=instance
        )
        assert result.output_for_node("engine_bytes") == ENGINE_BYTES.decode()
        assert read_value(store, instance, dg.AssetKey("never_materialized")) is None

        # A materialization that vouches for no value (reported from outside the IO manager):
        # the stored value is not read, whatever its sidecar says.
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="engine"))
        with pytest.raises(ArtifactIntegrityError, match="records no value_sha256"):
            read_value(store, instance, dg.AssetKey("engine"))
        result = dg.materialize(
            [engine, engine_bytes], selection=[engine_bytes], resources=_resources(store), instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        assert not result.success and "records no value_sha256" in _messages(result)


CELLS = dg.MultiPartitionsDefinition(
    {
        "device": dg.StaticPartitionsDefinition(["x86-cpu"]),
        "precision": dg.StaticPartitionsDefinition(["fp32", "int8"]),
    }
)


@dg.asset(name="engine", partitions_def=CELLS)
def cell_engine(context: dg.AssetExecutionContext) -> dict:
    return {"cell": context.partition_key}


@dg.asset(partitions_def=CELLS)
def cell_consumer(engine: dict) -> str:
    return str(engine["cell"])


@dg.asset
def every_cell(engine: dict[str, dict]) -> list[str]:
    """Fans in every partition of engine (the IO manager's dict[str, ...] inputs)."""
    return sorted(engine)


@pytest.mark.slow
def test_partitioned_values_are_pinned_to_their_own_partition_record(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    assets = [cell_engine, cell_consumer]
    with dg.instance_for_test() as instance:
        runs = {}
        for cell in ("x86-cpu|fp32", "x86-cpu|int8"):
            result = dg.materialize(
                assets, partition_key=cell, resources=_resources(store), instance=instance
            )
            assert result.output_for_node("cell_consumer") == cell
            runs[cell] = result.run_id
        key = value_key(dg.AssetKey("engine"), "x86-cpu|int8", CELLS)
        rewrite(store, key, encode_value({"cell": "x86-cpu|fp32"}))
        ok = dg.materialize(
            assets, selection=[cell_consumer], partition_key="x86-cpu|fp32", resources=_resources(store),
            instance=instance,
        )  # fmt: skip
        assert ok.success
        bad = dg.materialize(
            assets, selection=[cell_consumer], partition_key="x86-cpu|int8", resources=_resources(store),
            instance=instance, raise_on_error=False,
        )  # fmt: skip
        assert not bad.success
        message = _messages(bad)
        assert store.uri(key) in message and f"engine [x86-cpu|int8] in run {runs['x86-cpu|int8']}" in message
        fan_in = dg.materialize(
            [*assets, every_cell], selection=[every_cell], resources=_resources(store), instance=instance,
            raise_on_error=False,
        )  # fmt: skip
        assert not fan_in.success and f"engine [x86-cpu|int8] in run {runs['x86-cpu|int8']}" in _messages(
            fan_in
        )
