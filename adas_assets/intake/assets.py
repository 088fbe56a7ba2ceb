"""Intake assets: the target catalog and candidate checkpoints dropped into the inbox."""

import hashlib
import shutil
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

from adas.catalog import TARGETS_FILE
from adas.datasets.config import load_datagen_config
from adas.datasets.slices import DEFAULT_SLICES_PATH as SLICES_FILE
from adas.intake.bundle import prewarm_model_inspection
from adas.intake.candidates import screen_bundle, store_bundle
from adas.intake.files import BundleRejected
from adas.intake.golden import (
    MIN_TEST_IMAGES_PER_SLICE,
    draw_calibration_shard,
    replay_logs,
    slice_counts,
    store_golden_dataset,
)
from adas.intake.refs import CandidateRef, DatasetRef, SliceCatalogRef
from adas.settings import DEMO_BUNDLES_DIR
from adas_assets.cadence import GOLDEN_DATASET_FRESHNESS
from adas_assets.intake import presenters
from adas_assets.owners import INTAKE_OWNERS
from resources.artifact_store import ArtifactStoreParam
from resources.inbox import Inbox, InboxItem, cleanup_local_copy
from resources.registry import RegistryResource
from resources.targets import TARGET_CATALOG

INTAKE = "intake"
CATALOG_SHA256 = hashlib.sha256(TARGETS_FILE.read_bytes()).hexdigest()
SLICES_SHA256 = hashlib.sha256(SLICES_FILE.read_bytes()).hexdigest()


@dg.asset(
    group_name=INTAKE,
    owners=INTAKE_OWNERS,
    code_version=CATALOG_SHA256[:16],
    kinds={"yaml"},
    automation_condition=dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed(),
)
def target_catalog() -> dg.MaterializeResult:
    """Deployment targets (device, runtime, precisions, latency budget, Kubernetes placement).

    Generated from `config/targets.yaml`; every device x precision asset depends on it, so a
    catalog change shows up as stale engines in the UI.
    """
    return presenters.catalog_result(TARGET_CATALOG, TARGETS_FILE, CATALOG_SHA256)


class CandidateIntakeConfig(dg.Config):
    """Which inbox bundle to take in; the inbox sensor fills this in."""

    bundle_name: str = Field(description="Folder (prefix) name of the bundle in the inbox")
    bundle_location: str = Field(description="Where the inbox resource finds it (path or S3 prefix)")


@dg.asset(group_name=INTAKE, owners=INTAKE_OWNERS, kinds={"pytorch"})
def candidate_checkpoint(
    context: dg.AssetExecutionContext,
    config: CandidateIntakeConfig,
    artifact_store: ArtifactStoreParam,
    inbox: Inbox,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    """A candidate detector bundle taken in from the inbox, validated against its contract.

    Data version = bundle sha256 (over every file's hash), so the same bundle never counts as
    new. The version is claimed in the registry database (one atomic insert: a second bundle
    of the same version loses, naming the holder), then files are copied into
    `candidates/<task>/<version>/<sha12>/` with their hashes.
    """
    # The sandbox that will judge the model imports torch while the bundle is fetched and read.
    prewarm_model_inspection()
    item = InboxItem(config.bundle_name, config.bundle_location)
    local = inbox.local_copy(item)
    workdir = Path(tempfile.mkdtemp(prefix="intake-"))
    claims = registry.store()
    try:
        try:
            screened = screen_bundle(artifact_store, local, workdir, claims)
        except BundleRejected as exc:
            where = inbox.reject(item, exc.field, exc.reason)
            raise dg.Failure(
                description=f"bundle {config.bundle_name!r} rejected: {exc}",
                metadata={"field": exc.field, "reason": exc.reason, "moved_to": where},
            ) from exc
        bundle = screened.bundle
        context.log.info(
            f"bundle {config.bundle_name} valid: {bundle.contract.model_name} {bundle.contract.version}, "
            f"sha256 {bundle.digest.sha256[:12]}, {bundle.parameter_count:,} parameters"
        )
        source = inbox.location() + config.bundle_name
        try:
            ref = store_bundle(artifact_store, bundle, source, claims)
        except BundleRejected as exc:  # the claim was lost to a concurrent intake of the version
            where = inbox.reject(item, exc.field, exc.reason)
            raise dg.Failure(
                description=f"bundle {config.bundle_name!r} rejected: {exc}",
                metadata={"field": exc.field, "reason": exc.reason, "moved_to": where},
            ) from exc
    finally:
        claims.dispose()
        cleanup_local_copy(inbox, item, local)
        shutil.rmtree(workdir, ignore_errors=True)
    archived = inbox.archive(item, f"{ref.contract.version}-{ref.short_sha}")
    context.log.info(f"stored under {artifact_store.uri(ref.prefix)}; inbox copy moved to {archived}")
    return presenters.candidate_result(ref, artifact_store, screened.already_stored, archived)


# --- Golden data: simulated drive scenes, slices, calibration shard, replay logs -------------


class GoldenDatasetConfig(dg.Config):
    size: str = Field(default="demo", description="A size defined in config/datagen.yaml (demo, tiny)")
    workers: int = Field(default=2, ge=1, le=64, description="Simulator processes")


@dg.asset(
    group_name=INTAKE,
    owners=INTAKE_OWNERS,
    kinds={"python"},
    code_version="datagen-v1",
    freshness_policy=GOLDEN_DATASET_FRESHNESS,
)
def golden_dataset(
    context: dg.AssetExecutionContext, config: GoldenDatasetConfig, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    """Drive scenes from the highway-env simulator: top-down frames with ground-truth boxes.

    COCO manifests `golden_train/val/test` (no scene shared across splits; the roundabout
    scenario held out of training), replay sequences with track ids, and per-frame tags
    (scenario, density, weather, lighting) that slices select on. Deterministic from the seed
    in `config/datagen.yaml`; the dataset tag hashes that config, so a regenerated identical
    dataset is reused rather than rewritten.
    """
    outcome = store_golden_dataset(
        artifact_store, load_datagen_config(), config.size, config.workers, log=context.log.info
    )
    return presenters.dataset_result(outcome, artifact_store)


@dg.asset(group_name=INTAKE, owners=INTAKE_OWNERS, kinds={"yaml"}, code_version=SLICES_SHA256[:16])
def slice_catalog(golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam) -> dg.MaterializeResult:
    """Evaluation slices from `config/slices.yaml` (weather, lighting, scenario, density), counted per split.

    Critical slices are the ones promotion gates must not regress on.
    """
    outcome = slice_counts(artifact_store, golden_dataset, SLICES_FILE, SLICES_SHA256)
    return presenters.slice_catalog_result(outcome, SLICES_SHA256, MIN_TEST_IMAGES_PER_SLICE)


class CalibrationShardConfig(dg.Config):
    split: str = "golden_val"
    size: int = Field(default=128, ge=8, le=4096)
    strata: list[str] = Field(
        default=["clear_day", "night", "fog", "rain", "snow", "glare", "density_dense"],
        description="Slices sampled round-robin so every condition is in the INT8 calibration set",
    )
    seed: int = 0


@dg.asset(group_name=INTAKE, owners=INTAKE_OWNERS, kinds={"json"})
def calibration_shard(
    config: CalibrationShardConfig,
    golden_dataset: DatasetRef,
    slice_catalog: SliceCatalogRef,
    artifact_store: ArtifactStoreParam,
) -> dg.MaterializeResult:
    """Frames for INT8 calibration, balanced by slice (night, rain, fog ... all represented).

    Drawn from the validation split, never test, so calibration cannot leak into evaluation.
    """
    if config.split == "golden_test":
        raise dg.Failure(
            "calibration_shard.split must not be golden_test: calibration would leak into evaluation"
        )
    ref = draw_calibration_shard(
        artifact_store, golden_dataset, SLICES_FILE, config.split, config.size, config.strata, config.seed
    )
    return presenters.calibration_shard_result(ref)


@dg.asset(group_name=INTAKE, owners=INTAKE_OWNERS, kinds={"json"})
def replay_log_bundles(
    golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    """Recorded drive sequences (consecutive frames, ground truth with track ids) for open-loop replay."""
    return presenters.replay_result(replay_logs(artifact_store, golden_dataset))


class ProductionCheckpointConfig(dg.Config):
    bundle_dir: str = Field(
        default=str(DEMO_BUNDLES_DIR / "production"),
        description="Bundle of the model currently in production (until the registry names it)",
    )


@dg.asset(group_name=INTAKE, owners=INTAKE_OWNERS, kinds={"pytorch"})
def production_checkpoint(
    config: ProductionCheckpointConfig, artifact_store: ArtifactStoreParam, registry: RegistryResource
) -> dg.MaterializeResult:
    """The model serving production today: the baseline every candidate is compared against.

    Validated and stored exactly like a candidate. Until the registry holds a production
    entry it is the bundled `demo/bundles/production` (a weaker, earlier model).
    """
    claims = registry.store()
    with tempfile.TemporaryDirectory(prefix="intake-") as workdir:
        try:
            bundle = screen_bundle(artifact_store, Path(config.bundle_dir), Path(workdir), claims).bundle
            ref: CandidateRef = store_bundle(artifact_store, bundle, config.bundle_dir, claims)
        except BundleRejected as exc:
            raise dg.Failure(description=f"production bundle {config.bundle_dir} is invalid: {exc}") from exc
        finally:
            claims.dispose()
    return presenters.production_result(ref, config.bundle_dir)
