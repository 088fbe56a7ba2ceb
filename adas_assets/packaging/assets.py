"""Packaging assets (specification step 15): staging, export, engines per device x precision."""

import json
import os
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

from adas.catalog import TargetCatalog, UnsupportedTargetError
from adas.cell import Cell
from adas.intake.bundle import BundleRejected
from adas.intake.refs import CalibrationShardRef, CandidateRef, DatasetRef
from adas.packaging.build import (
    build_engine,
    export_graph,
    load_frames,
    read_json,
    stored_file,
)
from adas.packaging.config import PackagingConfig, default_packaging_config, load_packaging_config
from adas.packaging.quality import engine_quality
from adas.packaging.refs import EngineRef, ExportRef, StagedRef, TritonRepositoryRef, model_prefix
from adas.packaging.staging import stage_checkpoint
from adas.storage import ArtifactStore
from adas_assets.automation import eager_on_supported_targets
from adas_assets.metadata import table as _table
from adas_assets.partitions import (
    TARGET_PARTITIONS,
    per_target_check,
    per_target_description,
)
from resources.artifact_store import ArtifactStoreParam

PACKAGING = "packaging"
# A different packaging.yaml for this process (e.g. lighter checks in tests); default config/packaging.yaml.
PACKAGING_CONFIG_ENV = "ADAS_PACKAGING_CONFIG"


def packaging_config() -> PackagingConfig:
    path = os.environ.get(PACKAGING_CONFIG_ENV)
    return load_packaging_config(path) if path else default_packaging_config()


EAGER = dg.AutomationCondition.eager()


@dg.asset(group_name=PACKAGING, kinds={"pytorch"}, automation_condition=EAGER)
def staged_checkpoint(
    candidate_checkpoint: CandidateRef, artifact_store: ArtifactStoreParam
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
def exported_graph(staged_checkpoint: StagedRef, artifact_store: ArtifactStoreParam) -> dg.MaterializeResult:
    """ONNX graph (opset 17, dynamic batch axis) beside the bundle's `torch.export` program,
    with an operator coverage report per runtime (ONNX Runtime CPU, TensorRT)."""
    config = packaging_config()
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
    with_checks: bool,
) -> dg.MaterializeResult:
    # Imported here: both modules pull in onnx, which the code location must not load at import.
    from adas.packaging.operators import UnsupportedOperatorError
    from adas.packaging.tensorrt_engines import TensorRTUnavailable

    cell = Cell.parse(context.partition_key)

    device, precision = cell.device, cell.precision
    frames = _calibration_frames(store, shard, dataset) if precision == "int8" else None
    config = packaging_config()
    try:
        with tempfile.TemporaryDirectory(prefix=f"engine-{device}-{precision}-") as tmp:
            outcome = build_engine(
                store,
                export,
                device,
                precision,
                catalog=catalog,
                config=config,
                calibration_frames=frames,
                workdir=Path(tmp),
            )
    except (UnsupportedTargetError, TensorRTUnavailable, UnsupportedOperatorError) as exc:
        raise dg.Failure(description=str(exc)) from exc
    if not with_checks:
        return _engine_result(context, outcome.ref, outcome.details)
    context.log.info(f"{device}/{precision}: numerical equivalence and latency")
    qa = engine_quality(store, outcome.ref, dataset, catalog, config)
    ref = outcome.ref.model_copy(
        update={
            "build": {
                **outcome.ref.build,
                "latency": qa.latency_summary,
                "equivalence_passed": qa.equivalence.passed,
            }
        }
    )
    result = _engine_result(context, ref, outcome.details)
    return dg.MaterializeResult(
        value=ref,
        data_version=result.data_version,
        metadata={
            **(result.metadata or {}),
            "equivalence_report": dg.MetadataValue.url(qa.equivalence_file.uri),
            "latency_report": dg.MetadataValue.url(qa.latency_file.uri),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="numerical_equivalence",
                passed=qa.equivalence.passed and not qa.map_failure,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(
                    [*qa.equivalence.failures, *([qa.map_failure] if qa.map_failure else [])]
                )
                or "every head, the decoded boxes and the task metric within tolerance",
                metadata={
                    "report": dg.MetadataValue.md(qa.equivalence.markdown()),
                    "random_inputs": qa.equivalence.random_inputs,
                    "real_frames": qa.equivalence.real_frames,
                    **({"map_drop_points": qa.map_drop} if qa.map_drop is not None else {}),
                },
            ),
            dg.AssetCheckResult(
                check_name="latency_within_budget",
                passed=qa.within_budget,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"p95 at batch 1: {qa.p95_ms:.2f} ms, budget {qa.budget_ms:g} ms ({device})",
                metadata={
                    "latency": dg.MetadataValue.md(qa.latency.markdown()),
                    "p50_ms": qa.latency.batch(1).p50_ms,
                    "p95_ms": qa.p95_ms,
                    "best_batch": qa.latency.best_batch,
                    "best_throughput_fps": qa.latency.best_throughput_fps,
                    "peak_rss_mib": qa.latency.peak_rss_mib,
                },
            ),
        ],
    )


@dg.asset(
    group_name=PACKAGING,
    kinds={"onnx"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    pool="cpu-heavy",
    # With check specs, a `-> MaterializeResult` annotation makes Dagster type the output
    # Nothing and drop the value; dagster_type says it carries one.
    dagster_type=dg.Any,
    check_specs=[
        per_target_check(
            "numerical_equivalence",
            asset="engine",
            blocking=True,
            description="Engine vs FP32 PyTorch: per-head errors, decoded boxes, INT8 mAP drop",
        ),
        per_target_check(
            "latency_within_budget",
            asset="engine",
            description="p95 latency at batch 1 within the target's budget (targets.yaml)",
        ),
    ],
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
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    return _build_cell(
        context,
        exported_graph,
        target_catalog,
        calibration_shard,
        golden_dataset,
        artifact_store,
        with_checks=True,
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
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    with tempfile.TemporaryDirectory(prefix="prod-export-") as tmp:
        export = export_graph(artifact_store, production_checkpoint, packaging_config(), Path(tmp)).ref
    return _build_cell(
        context, export, target_catalog, calibration_shard, golden_dataset, artifact_store, with_checks=False
    )


# --- Serving: Triton repository with a real-server contract test, then the signed pack ---------


class TritonRepositoryConfig(dg.Config):
    cpu_serving: str = Field(
        default="python-onnxruntime",
        description="How CPU engines are served: 'python-onnxruntime' (runs on the bundled local server) "
        "or 'onnxruntime' (Triton's onnxruntime backend, production images)",
    )
    smoke_frames: int = Field(default=4, ge=1, le=64)


@dg.asset(
    group_name=PACKAGING,
    kinds={"triton"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    pool="cpu-heavy",
    dagster_type=dg.Any,
    check_specs=[
        per_target_check(
            "triton_contract_smoke",
            asset="triton_model_repository",
            blocking=True,
            description="A real Triton server answers raw frames with the engine's own detections (HTTP and gRPC)",
        )
    ],
    description=per_target_description(
        "Triton model repository: ensemble preprocess -> engine -> postprocess (decode + NMS), so "
        "clients send raw frames and get boxes, plus `inference_config.json`."
    ),
)
def triton_model_repository(
    context: dg.AssetExecutionContext,
    config: TritonRepositoryConfig,
    engine: EngineRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    from adas.packaging.serving import build_repository, smoke_test_repository

    with tempfile.TemporaryDirectory(prefix="triton-") as tmp:
        built = build_repository(artifact_store, engine, Path(tmp), config.cpu_serving)
        context.log.info(
            f"repository written ({len(built.ref.files)} files); starting Triton for the contract test"
        )
        smoke = smoke_test_repository(
            artifact_store, engine, golden_dataset, built.local_root, config.smoke_frames
        )
    return dg.MaterializeResult(
        value=built.ref,
        data_version=dg.DataVersion(built.ref.digest),
        metadata={
            "models": dg.MetadataValue.md("\n".join(f"- `{m}`" for m in built.model_names)),
            "serving": built.serving,
            "repository": dg.MetadataValue.url(artifact_store.uri(built.ref.prefix)),
            "inference_config": dg.MetadataValue.url(built.ref.inference_config.uri),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="triton_contract_smoke",
                passed=smoke.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                description="; ".join(smoke.failures)
                or "metadata, value ranges and detections match over HTTP and gRPC",
                metadata={
                    "report": dg.MetadataValue.md(smoke.to_markdown()),
                    "server_start_s": round(smoke.startup_seconds or 0.0, 2),
                },
            )
        ],
    )


@dg.asset(
    group_name=PACKAGING,
    kinds={"triton", "docker"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=eager_on_supported_targets(),
    description=per_target_description(
        "The signed model pack of one target cell, under `models/<task>/<version>/<device>/<precision>/`: "
        "engine, torch program, `inference_config.json`, `calibration.cache` (INT8), Triton repository, "
        "CycloneDX SBOM, license and vulnerability reports, serving container build context, "
        "`export_report.json`, ECDSA P-256 signatures (cosign verify-blob), and `pack_manifest.json` written last."
    ),
)
def model_pack(
    context: dg.AssetExecutionContext,
    engine: EngineRef,
    triton_model_repository: TritonRepositoryRef,
    exported_graph: ExportRef,
    staged_checkpoint: StagedRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    from adas.packaging.serving import assemble_pack

    with tempfile.TemporaryDirectory(prefix="pack-") as tmp:
        outcome = assemble_pack(
            artifact_store,
            engine,
            triton_model_repository,
            exported_graph,
            staged_checkpoint,
            Path(tmp),
            log=context.log.info,
        )
    ref = outcome.ref
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.manifest.sha256),
        metadata={
            "summary": dg.MetadataValue.md(outcome.summary_markdown),
            "container_tag": ref.container_tag,
            "pack": dg.MetadataValue.url(artifact_store.uri(ref.prefix)),
            "manifest": dg.MetadataValue.url(ref.manifest.uri),
            "files": len(ref.files),
            "signed_files": outcome.signed,
            "license_report": dg.MetadataValue.md(outcome.license_markdown),
            "vulnerability_scan": dg.MetadataValue.md(outcome.vuln_markdown),
            "wandb_artifact": outcome.wandb_artifact,
        },
    )
