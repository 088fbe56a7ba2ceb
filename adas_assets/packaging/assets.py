"""Packaging assets (specification step 15): staging, export, engines per device x precision."""

import json
import tempfile
from pathlib import Path

import dagster as dg

from adas_assets.automation import eager_on_supported_targets
from adas_assets.catalog import TargetCatalog, UnsupportedTargetError
from adas_assets.intake.bundle import BundleRejected
from adas_assets.intake.refs import CalibrationShardRef, CandidateRef, DatasetRef
from adas_assets.packaging.build import (
    build_engine,
    export_graph,
    load_frames,
    read_json,
    stored_file,
)
from adas_assets.packaging.config import default_packaging_config
from adas_assets.packaging.refs import EngineRef, ExportRef, StagedRef, model_prefix
from adas_assets.packaging.staging import stage_checkpoint
from adas_assets.partitions import TARGET_PARTITIONS, device_and_precision, per_target_description
from resources.artifact_store import ArtifactStore

PACKAGING = "packaging"
EAGER = dg.AutomationCondition.eager()


def _table(rows: list[dict], types: dict[str, str]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(
        [dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in types.items()]),
    )


@dg.asset(group_name=PACKAGING, kinds={"pytorch"}, automation_condition=EAGER)
def staged_checkpoint(
    candidate_checkpoint: CandidateRef, artifact_store: ArtifactStore
) -> dg.MaterializeResult:
    """The candidate re-verified for packaging: environment pinned, `requirements.lock` frozen,
    every bundle hash checked, one zero and one random batch forwarded with finite outputs."""
    try:
        staged = stage_checkpoint(artifact_store, candidate_checkpoint)
    except BundleRejected as exc:
        raise dg.Failure(description=f"staging failed: {exc}", metadata={"field": exc.field}) from exc
    c = candidate_checkpoint.contract
    prefix = f"{model_prefix(c.task, c.version)}/staging"
    lock = stored_file(artifact_store, f"{prefix}/requirements.lock", data=staged.requirements_lock.encode())
    env = stored_file(
        artifact_store, f"{prefix}/environment.json", data=json.dumps(staged.environment, indent=2).encode()
    )
    packages = staged.environment["packages"]
    return dg.MaterializeResult(
        value=StagedRef(candidate=candidate_checkpoint, requirements_lock=lock, environment=env),
        data_version=dg.DataVersion(f"{candidate_checkpoint.bundle_sha256[:16]}-{lock.sha256[:16]}"),
        metadata={
            "environment": _table(
                [
                    {"component": "python", "version": staged.environment["python"]},
                    *({"component": k, "version": v or "not installed"} for k, v in packages.items()),
                    {"component": "cuda", "version": str(staged.environment["cuda"]["torch_cuda"])},
                    {"component": "image", "version": staged.environment["image_digest"]},
                ],
                {"component": "string", "version": "string"},
            ),
            "cpu": staged.environment["cpu"],
            "requirements_lock": dg.MetadataValue.url(lock.uri),
            "locked_packages": staged.requirements_lock.count("\n"),
            "output_ranges": _table(
                [{"output": k, "min": lo, "max": hi} for k, (lo, hi) in staged.output_ranges.items()],
                {"output": "string", "min": "float", "max": "float"},
            ),
        },
    )


@dg.asset(group_name=PACKAGING, kinds={"onnx"}, automation_condition=EAGER)
def exported_graph(staged_checkpoint: StagedRef, artifact_store: ArtifactStore) -> dg.MaterializeResult:
    """ONNX graph (opset 17, dynamic batch axis) beside the bundle's `torch.export` program,
    with an operator coverage report per runtime (ONNX Runtime CPU, TensorRT)."""
    config = default_packaging_config()
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        outcome = export_graph(artifact_store, staged_checkpoint.candidate, config, Path(tmp))
    d = outcome.details
    return dg.MaterializeResult(
        value=outcome.ref,
        data_version=dg.DataVersion(outcome.ref.onnx.sha256),
        metadata={
            "onnx": dg.MetadataValue.url(outcome.ref.onnx.uri),
            "opset": d["opset"],
            "nodes": d["node_count"],
            "max_abs_diff_vs_torch": d["max_abs_diff"],
            "op_histogram": _table(
                [{"op": k, "count": v} for k, v in sorted(d["op_histogram"].items())],
                {"op": "string", "count": "int"},
            ),
            **{f"coverage_{rt}": dg.MetadataValue.md(md) for rt, md in outcome.coverage_markdown.items()},
            "runtimes_supported": dg.MetadataValue.json(outcome.ref.runtimes_supported),
        },
    )


def _calibration_frames(store: ArtifactStore, shard: CalibrationShardRef, dataset: DatasetRef):
    body = read_json(store, shard.shard)
    return load_frames(store, dataset, body["file_names"])


def _engine_result(context: dg.AssetExecutionContext, ref: EngineRef, details: dict) -> dg.MaterializeResult:
    rows = [
        {"field": k, "value": str(v)}
        for k, v in details.items()
        if k
        in (
            "runtime",
            "precision",
            "mode",
            "size_bytes",
            "build_seconds",
            "node_count",
            "qdq_nodes",
            "quantized_nodes",
            "calibration_frames",
            "calibration_method",
            "per_channel",
        )
    ]
    excluded = details.get("excluded_nodes") or {}
    metadata: dict = {
        "device": ref.device,
        "precision": ref.precision,
        "runtime": ref.runtime,
        "engine": dg.MetadataValue.url(ref.engine.uri),
        "engine_sha256": ref.engine.sha256,
        "engine_bytes": ref.engine.size,
        "build": _table(rows, {"field": "string", "value": "string"}),
    }
    if ref.calibration_cache is not None:
        metadata["calibration_cache"] = dg.MetadataValue.url(ref.calibration_cache.uri)
        metadata["fp32_fallback_nodes"] = _table(
            [{"node": k, "reason": v} for k, v in excluded.items()], {"node": "string", "reason": "string"}
        )
    context.log.info(
        f"{ref.device}/{ref.precision}: {ref.runtime} engine {ref.engine.size:,} bytes at {ref.engine.uri}"
    )
    return dg.MaterializeResult(value=ref, data_version=dg.DataVersion(ref.engine.sha256), metadata=metadata)


def _build_cell(
    context: dg.AssetExecutionContext,
    export: ExportRef,
    catalog: TargetCatalog,
    shard: CalibrationShardRef,
    dataset: DatasetRef,
    store: ArtifactStore,
) -> dg.MaterializeResult:
    device, precision = device_and_precision(context.partition_key)
    frames = _calibration_frames(store, shard, dataset) if precision == "int8" else None
    try:
        with tempfile.TemporaryDirectory(prefix=f"engine-{device}-{precision}-") as tmp:
            outcome = build_engine(
                store,
                export,
                device,
                precision,
                catalog=catalog,
                config=default_packaging_config(),
                calibration_frames=frames,
                workdir=Path(tmp),
            )
    except UnsupportedTargetError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return _engine_result(context, outcome.ref, outcome.details)


@dg.asset(
    group_name=PACKAGING,
    kinds={"onnx"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    pool="cpu-heavy",
    description=per_target_description(
        "Inference engine of the candidate for one target cell: ONNX Runtime FP32 / INT8 (static Q/DQ "
        "calibrated on the slice-balanced shard, per-layer FP32 fallback, `calibration.cache`) on "
        "`x86-cpu`; TensorRT `model.plan` on NVIDIA targets (needs a GPU node with TensorRT)."
    ),
)
def engine(
    context: dg.AssetExecutionContext,
    exported_graph: ExportRef,
    target_catalog: TargetCatalog,
    calibration_shard: CalibrationShardRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStore,
) -> dg.MaterializeResult:
    return _build_cell(
        context, exported_graph, target_catalog, calibration_shard, golden_dataset, artifact_store
    )


@dg.asset(
    group_name=PACKAGING,
    kinds={"onnx"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    pool="cpu-heavy",
    description=per_target_description(
        "The current production model packaged for the same cell, with the same export and engine "
        "code as the candidate, so evaluation and simulation compare like with like."
    ),
)
def production_engine(
    context: dg.AssetExecutionContext,
    production_checkpoint: CandidateRef,
    target_catalog: TargetCatalog,
    calibration_shard: CalibrationShardRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStore,
) -> dg.MaterializeResult:
    with tempfile.TemporaryDirectory(prefix="prod-export-") as tmp:
        export = export_graph(
            artifact_store, production_checkpoint, default_packaging_config(), Path(tmp)
        ).ref
    return _build_cell(context, export, target_catalog, calibration_shard, golden_dataset, artifact_store)
