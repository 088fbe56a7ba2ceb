"""Intake assets: the target catalog and candidate checkpoints dropped into the inbox."""

import hashlib
import json
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import Field

from adas.catalog import TARGETS_FILE
from adas.datasets.generator import dataset_tag, generate_dataset, load_datagen_config
from adas.datasets.slices import DEFAULT_SLICES_PATH as SLICES_FILE
from adas.datasets.slices import load_slices
from adas.intake.bundle import BundleRejected, validate_bundle
from adas.intake.calibration import balanced_shard
from adas.intake.candidates import check_version_free, store_bundle
from adas.intake.refs import (
    CalibrationShardRef,
    CandidateRef,
    DatasetRef,
    ReplayBundleRef,
    SliceCatalogRef,
    StoredFile,
)
from adas.settings import DEMO_BUNDLES_DIR
from adas.storage import ArtifactStore
from adas_assets.metadata import table as _table
from resources.artifact_store import ArtifactStoreParam
from resources.inbox import Inbox, InboxItem, cleanup_local_copy
from resources.targets import TARGET_CATALOG

INTAKE = "intake"
CATALOG_SHA256 = hashlib.sha256(TARGETS_FILE.read_bytes()).hexdigest()
SLICES_SHA256 = hashlib.sha256(SLICES_FILE.read_bytes()).hexdigest()
# A slice thinner than this on the test split gives AP estimates too noisy to gate on.
MIN_TEST_IMAGES_PER_SLICE = 30


@dg.asset(
    group_name=INTAKE,
    code_version=CATALOG_SHA256[:16],
    kinds={"yaml"},
    automation_condition=dg.AutomationCondition.eager() | dg.AutomationCondition.code_version_changed(),
)
def target_catalog() -> dg.MaterializeResult:
    """Deployment targets (device, runtime, precisions, latency budget, Kubernetes placement).

    Generated from `config/targets.yaml`; every device x precision asset depends on it, so a
    catalog change shows up as stale engines in the UI.
    """
    catalog = TARGET_CATALOG
    rows = [
        dg.TableRecord(
            {
                "device": d,
                "runtime": t.runtime,
                "precisions": ", ".join(t.precisions),
                "p95_budget_ms": t.latency_budget_ms.p95,
                "gpus": t.kubernetes.gpu_count,
                "node_selector": ", ".join(f"{k}={v}" for k, v in t.kubernetes.node_selector.items()),
            }
        )
        for d, t in catalog.targets.items()
    ]
    return dg.MaterializeResult(
        value=catalog,
        data_version=dg.DataVersion(CATALOG_SHA256),
        metadata={
            "support_matrix": dg.MetadataValue.md(catalog.support_matrix_markdown()),
            "targets": dg.MetadataValue.table(
                rows,
                schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn("device", "string"),
                        dg.TableColumn("runtime", "string"),
                        dg.TableColumn("precisions", "string"),
                        dg.TableColumn("p95_budget_ms", "float"),
                        dg.TableColumn("gpus", "int"),
                        dg.TableColumn("node_selector", "string"),
                    ]
                ),
            ),
            "supported_cells": len(catalog.supported_pairs()),
            "unsupported_cells": dg.MetadataValue.text(
                ", ".join(f"{d}/{p}" for d, p in catalog.unsupported_pairs()) or "none"
            ),
            "source": dg.MetadataValue.path(str(TARGETS_FILE)),
            "sha256": CATALOG_SHA256,
        },
    )


class CandidateIntakeConfig(dg.Config):
    """Which inbox bundle to take in; the inbox sensor fills this in."""

    bundle_name: str = Field(description="Folder (prefix) name of the bundle in the inbox")
    bundle_location: str = Field(description="Where the inbox resource finds it (path or S3 prefix)")


def _candidate_summary(ref: CandidateRef) -> str:
    c, lin = ref.contract, ref.lineage
    outputs = "\n".join(f"| `{o.name}` | {o.shape} | {o.dtype} | {o.description} |" for o in c.outputs)
    classes = ", ".join(f"{e.id}={e.name}" for e in c.classes)
    p = c.postprocess
    return f"""### {c.model_name} {c.version} ({c.task})

| | |
|---|---|
| bundle sha256 | `{ref.bundle_sha256}` |
| format | {c.model_format} (`{c.model_file}`), {ref.parameter_count:,} parameters |
| training run | `{lin.training_run_id}` |
| dataset tag | `{lin.dataset_tag}` |
| git SHA | `{lin.git_sha}` |
| input | `{c.input.name}` {c.input.shape} {c.input.dtype} {c.input.layout} {c.input.color} |
| classes | {classes} |
| postprocess | {p.type}, stride {p.stride}, score >= {p.score_threshold}, NMS IoU {p.nms_iou_threshold}, max {p.max_detections} |

| output | shape | dtype | meaning |
|---|---|---|---|
{outputs}
"""


@dg.asset(group_name=INTAKE, kinds={"pytorch"})
def candidate_checkpoint(
    context: dg.AssetExecutionContext,
    config: CandidateIntakeConfig,
    artifact_store: ArtifactStoreParam,
    inbox: Inbox,
) -> dg.MaterializeResult:
    """A candidate detector bundle taken in from the inbox, validated against its contract.

    Data version = bundle sha256 (over every file's hash), so the same bundle never counts as
    new. Files are copied into `candidates/<task>/<version>/<sha12>/` with their hashes.
    """
    item = InboxItem(config.bundle_name, config.bundle_location)
    local = inbox.local_copy(item)
    try:
        try:
            bundle = validate_bundle(local)
            already_stored = check_version_free(artifact_store, bundle)
        except BundleRejected as exc:
            where = inbox.reject(item, exc.field, exc.reason)
            raise dg.Failure(
                description=f"bundle {config.bundle_name!r} rejected: {exc}",
                metadata={"field": exc.field, "reason": exc.reason, "moved_to": where},
            ) from exc
        context.log.info(
            f"bundle {config.bundle_name} valid: {bundle.contract.model_name} {bundle.contract.version}, "
            f"sha256 {bundle.digest.sha256[:12]}, {bundle.parameter_count:,} parameters"
        )
        ref = store_bundle(artifact_store, bundle, source=inbox.location() + config.bundle_name)
    finally:
        cleanup_local_copy(inbox, item, local)
    archived = inbox.archive(item, f"{ref.contract.version}-{ref.short_sha}")
    context.log.info(f"stored under {artifact_store.uri(ref.prefix)}; inbox copy moved to {archived}")
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.bundle_sha256),
        metadata={
            "summary": dg.MetadataValue.md(_candidate_summary(ref)),
            "version": ref.contract.version,
            "model_name": ref.contract.model_name,
            "bundle_sha256": ref.bundle_sha256,
            "training_run_id": ref.lineage.training_run_id,
            "dataset_tag": ref.lineage.dataset_tag,
            "git_sha": ref.lineage.git_sha,
            "parameter_count": ref.parameter_count,
            "stored_at": dg.MetadataValue.url(artifact_store.uri(ref.prefix)),
            "already_stored": already_stored,
            "files": dg.MetadataValue.table(
                [
                    dg.TableRecord({"file": name, "sha256": f.sha256, "bytes": f.size})
                    for name, f in ref.files.items()
                ],
                schema=dg.TableSchema(
                    columns=[
                        dg.TableColumn("file", "string"),
                        dg.TableColumn("sha256", "string"),
                        dg.TableColumn("bytes", "int"),
                    ]
                ),
            ),
            "inbox_archive": dg.MetadataValue.path(archived),
        },
    )


# --- Golden data: simulated drive scenes, slices, calibration shard, replay logs -------------

MANIFESTS = (
    "dataset.json",
    "golden_train.json",
    "golden_val.json",
    "golden_test.json",
    "replay_sequences.json",
)
SPLITS = ("golden_train", "golden_val", "golden_test")


class GoldenDatasetConfig(dg.Config):
    size: str = Field(default="demo", description="A size defined in config/datagen.yaml (demo, tiny)")
    workers: int = Field(default=2, ge=1, le=64, description="Simulator processes")


def _stored(store: ArtifactStore, key: str) -> StoredFile:
    data = store.get_bytes(key)
    return StoredFile(key=key, uri=store.uri(key), sha256=store.recorded_sha256(key), size=len(data))


def _read_json(store: ArtifactStore, f: StoredFile) -> dict:
    return json.loads(store.get_bytes(f.key, expected_sha256=f.sha256))


@dg.asset(group_name=INTAKE, kinds={"python"}, code_version="datagen-v1")
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
    datagen = load_datagen_config()
    tag = dataset_tag(datagen, config.size)
    prefix = f"datasets/{tag}"
    reused = artifact_store.exists(f"{prefix}/dataset.json")
    seconds = 0.0
    if reused:
        context.log.info(f"dataset {tag} already in the store; reusing it")
    else:
        with tempfile.TemporaryDirectory(prefix=f"{tag}-") as tmp:
            summary = generate_dataset(
                Path(tmp), datagen, size=config.size, workers=config.workers, progress=context.log.info
            )
            seconds = summary.seconds
            context.log.info(f"storing {tag} under {artifact_store.uri(prefix)}")
            artifact_store.put_tree(prefix, Path(tmp))
    manifests = {
        name.removesuffix(".json"): _stored(artifact_store, f"{prefix}/{name}") for name in MANIFESTS
    }
    meta = _read_json(artifact_store, manifests["dataset"])
    ref = DatasetRef(
        tag=tag,
        prefix=prefix,
        size=config.size,
        config_hash=meta["config_hash"],
        frame_size=list(meta["frame_size"]),
        counts=dict(meta["counts"]),
        manifests=manifests,
        file_count=len(artifact_store.list_keys(prefix + "/")),
    )
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(tag),
        metadata={
            "dataset_tag": tag,
            "frames": _table(
                [{"split": k, "images": v} for k, v in ref.counts.items()],
                {"split": "string", "images": "int"},
            ),
            "frame_size_hw": dg.MetadataValue.text(f"{ref.frame_size[0]} x {ref.frame_size[1]}"),
            "files": ref.file_count,
            "generation_seconds": round(seconds, 1),
            "reused": reused,
            "location": dg.MetadataValue.url(artifact_store.uri(prefix)),
        },
    )


@dg.asset(group_name=INTAKE, kinds={"yaml"}, code_version=SLICES_SHA256[:16])
def slice_catalog(golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam) -> dg.MaterializeResult:
    """Evaluation slices from `config/slices.yaml` (weather, lighting, scenario, density), counted per split.

    Critical slices are the ones promotion gates must not regress on.
    """
    catalog = load_slices(SLICES_FILE)
    stored = artifact_store.put_file(f"config-snapshots/slices/{SLICES_SHA256[:16]}.yaml", SLICES_FILE)
    counts = {
        split: catalog.counts(_read_json(artifact_store, golden_dataset.manifests[split])) for split in SPLITS
    }
    rows = [
        {"slice": s.name, "critical": s.critical, **{split: counts[split][s.name] for split in SPLITS}}
        for s in catalog.slices
    ]
    thin = [r["slice"] for r in rows if r["golden_test"] < MIN_TEST_IMAGES_PER_SLICE]
    return dg.MaterializeResult(
        value=SliceCatalogRef(
            dataset_tag=golden_dataset.tag,
            slices_file=StoredFile(key=stored.key, uri=stored.uri, sha256=stored.sha256, size=stored.size),
            critical=catalog.critical,
            counts=counts,
        ),
        data_version=dg.DataVersion(f"{SLICES_SHA256[:16]}-{golden_dataset.tag}"),
        metadata={
            "slices": _table(
                rows,
                {"slice": "string", "critical": "bool", **dict.fromkeys(SPLITS, "int")},
            ),
            "critical": dg.MetadataValue.text(", ".join(catalog.critical)),
            "thin_test_slices": dg.MetadataValue.text(
                ", ".join(thin)
                if thin
                else f"none (every slice has >= {MIN_TEST_IMAGES_PER_SLICE} test images)"
            ),
        },
    )


class CalibrationShardConfig(dg.Config):
    split: str = "golden_val"
    size: int = Field(default=128, ge=8, le=4096)
    strata: list[str] = Field(
        default=["clear_day", "night", "fog", "rain", "snow", "glare", "density_dense"],
        description="Slices sampled round-robin so every condition is in the INT8 calibration set",
    )
    seed: int = 0


@dg.asset(group_name=INTAKE, kinds={"json"})
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
    coco = _read_json(artifact_store, golden_dataset.manifests[config.split])
    catalog = load_slices(SLICES_FILE)
    ids, per_stratum = balanced_shard(coco, catalog, config.size, config.strata, config.seed)
    by_id = {img["id"]: img for img in coco["images"]}
    body = {
        "dataset_tag": golden_dataset.tag,
        "split": config.split,
        "image_ids": ids,
        "file_names": [by_id[i]["file_name"] for i in ids],
        "per_stratum": per_stratum,
    }
    key = f"{golden_dataset.prefix}/calibration/{config.split}-{config.size}-s{config.seed}.json"
    stored = artifact_store.put_bytes(key, json.dumps(body, indent=2).encode())
    return dg.MaterializeResult(
        value=CalibrationShardRef(
            dataset_tag=golden_dataset.tag,
            split=config.split,
            shard=StoredFile(key=stored.key, uri=stored.uri, sha256=stored.sha256, size=stored.size),
            image_ids=ids,
            per_stratum=per_stratum,
        ),
        data_version=dg.DataVersion(stored.sha256),
        metadata={
            "frames": len(ids),
            "per_stratum": _table(
                [{"stratum": k, "frames": v} for k, v in per_stratum.items()],
                {"stratum": "string", "frames": "int"},
            ),
            "shard": dg.MetadataValue.url(stored.uri),
        },
    )


@dg.asset(group_name=INTAKE, kinds={"json"})
def replay_log_bundles(
    golden_dataset: DatasetRef, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    """Recorded drive sequences (consecutive frames, ground truth with track ids) for open-loop replay."""
    manifest = golden_dataset.manifests["replay_sequences"]
    replay = _read_json(artifact_store, manifest)
    sequences = [
        {
            "sequence_id": s["sequence_id"],
            "scenario": s["scenario"],
            "weather": s["weather"],
            "lighting": s["lighting"],
            "frames": len(s["image_ids"]),
            "fps": float(s["fps"]),
        }
        for s in replay["sequences"]
    ]
    return dg.MaterializeResult(
        value=ReplayBundleRef(dataset_tag=golden_dataset.tag, manifest=manifest, sequences=sequences),
        data_version=dg.DataVersion(manifest.sha256),
        metadata={
            "sequences": _table(
                sequences,
                {
                    "sequence_id": "string",
                    "scenario": "string",
                    "weather": "string",
                    "lighting": "string",
                    "frames": "int",
                    "fps": "float",
                },
            ),
            "annotated_boxes": len(replay["annotations"]),
        },
    )


class ProductionCheckpointConfig(dg.Config):
    bundle_dir: str = Field(
        default=str(DEMO_BUNDLES_DIR / "production"),
        description="Bundle of the model currently in production (until the registry names it)",
    )


@dg.asset(group_name=INTAKE, kinds={"pytorch"})
def production_checkpoint(
    config: ProductionCheckpointConfig, artifact_store: ArtifactStoreParam
) -> dg.MaterializeResult:
    """The model serving production today: the baseline every candidate is compared against.

    Validated and stored exactly like a candidate. Until the registry holds a production
    entry it is the bundled `demo/bundles/production` (a weaker, earlier model).
    """
    try:
        bundle = validate_bundle(Path(config.bundle_dir))
    except BundleRejected as exc:
        raise dg.Failure(description=f"production bundle {config.bundle_dir} is invalid: {exc}") from exc
    check_version_free(artifact_store, bundle)
    ref = store_bundle(artifact_store, bundle, source=config.bundle_dir)
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.bundle_sha256),
        metadata={
            "summary": dg.MetadataValue.md(_candidate_summary(ref)),
            "version": ref.contract.version,
            "bundle_sha256": ref.bundle_sha256,
            "source": dg.MetadataValue.path(config.bundle_dir),
        },
    )
