"""Intake assets: the target catalog and candidate checkpoints dropped into the inbox."""

import hashlib

import dagster as dg
from pydantic import Field

from adas_assets.catalog import TARGETS_FILE, default_catalog
from adas_assets.intake.bundle import BundleRejected, validate_bundle
from adas_assets.intake.candidates import check_version_free, store_bundle
from adas_assets.intake.refs import CandidateRef
from resources.artifact_store import ArtifactStore
from resources.inbox import Inbox, InboxItem, cleanup_local_copy

INTAKE = "intake"
CATALOG_SHA256 = hashlib.sha256(TARGETS_FILE.read_bytes()).hexdigest()


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
    catalog = default_catalog()
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
    artifact_store: ArtifactStore,
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
