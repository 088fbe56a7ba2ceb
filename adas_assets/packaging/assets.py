"""Packaging assets (specification step 15): staging, export, engines per device x precision."""

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import dagster as dg
from pydantic import Field

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.intake.bundle import BundleRejected
from adas.intake.refs import CalibrationShardRef, CandidateRef, DatasetRef
from adas.packaging.build import export_candidate
from adas.packaging.config import packaging_config_from_env
from adas.packaging.engines import CELL_BUILD_ERRORS, CellEngine, build_cell_engine, build_production_engine
from adas.packaging.export import ExportError
from adas.packaging.oci_publication import PUBLISH_ERRORS, publish_and_report
from adas.packaging.refs import EngineRef, ExportRef, PackRef, StagedRef, TritonRepositoryRef
from adas.packaging.serving import build_and_smoke_repository, package_cell
from adas.packaging.staging import stage_candidate
from adas.storage import ArtifactStore
from adas_assets.automation import eager_on_supported_targets
from adas_assets.cadence import NIGHTLY_ENGINE_FRESHNESS
from adas_assets.owners import PACKAGING_OWNERS
from adas_assets.packaging import checks, presenters
from adas_assets.partitions import TARGET_PARTITIONS, per_target_description
from resources.artifact_store import ArtifactStoreParam
from resources.oci_registry import OciRegistryResource

PACKAGING = "packaging"
EAGER = dg.AutomationCondition.eager()


@dg.asset(group_name=PACKAGING, owners=PACKAGING_OWNERS, kinds={"pytorch"}, automation_condition=EAGER)
def staged_checkpoint(
    candidate_checkpoint: CandidateRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    """The candidate re-verified for packaging: environment pinned, `requirements.lock` frozen,
    every bundle hash checked, one zero and one random batch forwarded with finite outputs."""
    try:
        outcome = stage_candidate(artifact_store, candidate_checkpoint)
    except BundleRejected as exc:
        raise dg.Failure(description=f"staging failed: {exc}", metadata={"field": exc.field}) from exc
    return presenters.staged_result(outcome)


@dg.asset(group_name=PACKAGING, owners=PACKAGING_OWNERS, kinds={"onnx"}, automation_condition=EAGER)
def exported_graph(staged_checkpoint: StagedRef, artifact_store: ArtifactStoreParam) -> dg.MaterializeResult:
    """ONNX graph (opset 17, dynamic batch axis) beside the bundle's `torch.export` program,
    with an operator coverage report per runtime (ONNX Runtime CPU, TensorRT)."""
    try:
        outcome = export_candidate(artifact_store, staged_checkpoint.candidate, packaging_config_from_env())
    except ExportError as exc:  # names the operator, the module, the opset and a hint
        raise dg.Failure(description=str(exc)) from exc
    return presenters.export_result(outcome)


def _cell_asset(
    summary: str, *, kinds: set[str], checks: Sequence[dg.AssetCheckSpec] = (), **kwargs: Any
) -> Callable[[Callable[..., dg.MaterializeResult]], dg.AssetsDefinition]:
    """``@dg.asset`` of a packaging asset per target cell, eager on the catalog's supported cells.

    With ``checks``, the asset returns their results beside its materialization; a
    ``-> MaterializeResult`` annotation would then make Dagster type the output Nothing and drop
    the value, so ``dagster_type`` says it carries one.
    """
    if checks:
        kwargs.update(check_specs=list(checks), dagster_type=dg.Any)
    return dg.asset(
        group_name=PACKAGING,
        owners=PACKAGING_OWNERS,
        kinds=kinds,
        partitions_def=TARGET_PARTITIONS,
        automation_condition=eager_on_supported_targets(),
        description=per_target_description(summary),
        **kwargs,
    )


def _cell_engine(
    context: dg.AssetExecutionContext,
    build: Callable[..., CellEngine],
    source: ExportRef | CandidateRef,
    catalog: TargetCatalog,
    shard: CalibrationShardRef,
    dataset: DatasetRef,
    store: ArtifactStore,
) -> dg.MaterializeResult:
    """The partition's engine built from ``source`` by ``build``; a cell that cannot be built
    here fails with the sentence saying why."""
    try:
        cell = build(
            store,
            source,
            Cell.parse(context.partition_key),
            catalog=catalog,
            config=packaging_config_from_env(),
            shard=shard,
            dataset=dataset,
            log=context.log.info,
        )
    except CELL_BUILD_ERRORS as exc:
        raise dg.Failure(description=str(exc)) from exc
    return presenters.engine_result(cell)


@_cell_asset(
    "Inference engine of the candidate for one target cell: ONNX Runtime FP32 / INT8 (static Q/DQ "
    "calibrated on the slice-balanced shard, per-layer FP32 fallback, `calibration.cache`) on "
    "`x86-cpu`; TensorRT `model.plan` on NVIDIA targets (needs a GPU node with TensorRT).",
    kinds={"onnx"},
    checks=checks.ENGINE_CHECKS,
    pool="cpu-heavy",
    freshness_policy=NIGHTLY_ENGINE_FRESHNESS,
)
def engine(
    context: dg.AssetExecutionContext,
    exported_graph: ExportRef,
    target_catalog: TargetCatalog,
    calibration_shard: CalibrationShardRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    build = partial(build_cell_engine, with_checks=True)
    return _cell_engine(
        context, build, exported_graph, target_catalog, calibration_shard, golden_dataset, artifact_store
    )


@_cell_asset(
    "The current production model packaged for the same cell, with the same export and engine "
    "code as the candidate, so evaluation and simulation compare like with like.",
    kinds={"onnx"},
    pool="cpu-heavy",
    freshness_policy=NIGHTLY_ENGINE_FRESHNESS,
)
def production_engine(
    context: dg.AssetExecutionContext,
    production_checkpoint: CandidateRef,
    target_catalog: TargetCatalog,
    calibration_shard: CalibrationShardRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    return _cell_engine(
        context,
        build_production_engine,
        production_checkpoint,
        target_catalog,
        calibration_shard,
        golden_dataset,
        artifact_store,
    )


# --- Serving: Triton repository with a real-server contract test, then the signed pack ---------


class TritonRepositoryConfig(dg.Config):
    cpu_serving: str = Field(
        default="python-onnxruntime",
        description="How CPU engines are served: 'python-onnxruntime' (runs on the bundled local server) "
        "or 'onnxruntime' (Triton's onnxruntime backend, production images)",
    )
    smoke_frames: int = Field(default=4, ge=1, le=64)


@_cell_asset(
    "Triton model repository: ensemble preprocess -> engine -> postprocess (decode + NMS), so "
    "clients send raw frames and get boxes, plus `inference_config.json`.",
    kinds={"triton"},
    checks=checks.TRITON_CHECKS,
    pool="cpu-heavy",
)
def triton_model_repository(
    context: dg.AssetExecutionContext,
    config: TritonRepositoryConfig,
    engine: EngineRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    outcome = build_and_smoke_repository(
        artifact_store, engine, golden_dataset, config.cpu_serving, config.smoke_frames, log=context.log.info
    )
    return presenters.repository_result(outcome, artifact_store)


@_cell_asset(
    "The signed model pack of one target cell, under `models/<task>/<version>/<device>/<precision>/`: "
    "engine, torch program, `inference_config.json`, `calibration.cache` (INT8), Triton repository, "
    "CycloneDX SBOM, license and vulnerability reports, serving container build context, "
    "`export_report.json`, ECDSA P-256 signatures (cosign verify-blob), and `pack_manifest.json` written last.",
    kinds={"triton", "docker"},
)
def model_pack(
    context: dg.AssetExecutionContext,
    engine: EngineRef,
    triton_model_repository: TritonRepositoryRef,
    exported_graph: ExportRef,
    staged_checkpoint: StagedRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    outcome = package_cell(
        artifact_store,
        engine,
        triton_model_repository,
        exported_graph,
        staged_checkpoint,
        log=context.log.info,
    )
    return presenters.pack_result(outcome, artifact_store)


@_cell_asset(
    "The cell's signed model pack published to the OCI registry as a CNCF ModelPack artifact "
    "(one deterministic tar layer per file group: engine, Triton repository, inference contract, "
    "reports, SBOM, signatures), tagged `<version>-<device>-<precision>-<git sha7>`. Its reference "
    "`repository@sha256:...` is what the registry entry pins. Local: `docker-registry` under "
    "`ADAS_HOME` on 127.0.0.1 (started on demand); production: `ADAS_OCI_REGISTRY`, credentials "
    "from the environment only. Layers the registry already holds are not pushed again. The report "
    "says in one line why no serving image was built (no base pinned in `config/serving.yaml`, "
    "base unreachable, or no builder); the pack's W&B artifact carries the digest.",
    kinds={"oci"},
)
def published_pack(
    context: dg.AssetExecutionContext,
    model_pack: PackRef,
    artifact_store: ArtifactStoreParam,
    oci_registry: OciRegistryResource,
) -> dg.MaterializeResult:
    """The cell's model pack in the OCI registry, by digest."""
    try:
        published = publish_and_report(
            artifact_store,
            model_pack,
            oci_registry.client(),
            namespace=oci_registry.namespace,
            log=context.log.info,
        )
    except PUBLISH_ERRORS as exc:  # each names the registry URL, the layer or the file
        raise dg.Failure(description=f"publishing {model_pack.prefix} failed: {exc}") from exc
    return presenters.published_result(published)
