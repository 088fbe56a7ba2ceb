"""Intake results as Dagster materializations: metadata tables, markdown summaries, data versions."""

from pathlib import Path

import dagster as dg

from adas.catalog import TargetCatalog
from adas.intake.contract import Postprocess
from adas.intake.golden import SPLITS, GoldenDataset, ReplayLogs, SliceCounts
from adas.intake.refs import CalibrationShardRef, CandidateRef
from adas.storage import ArtifactStore
from adas_assets.metadata import table


def catalog_result(catalog: TargetCatalog, source: Path, sha256: str) -> dg.MaterializeResult:
    rows = [
        {
            "device": d,
            "runtime": t.runtime,
            "precisions": ", ".join(t.precisions),
            "p95_budget_ms": t.latency_budget_ms.p95,
            "gpus": t.kubernetes.gpu_count,
            "node_selector": ", ".join(f"{k}={v}" for k, v in t.kubernetes.node_selector.items()),
        }
        for d, t in catalog.targets.items()
    ]
    columns = {
        "device": "string",
        "runtime": "string",
        "precisions": "string",
        "p95_budget_ms": "float",
        "gpus": "int",
        "node_selector": "string",
    }
    return dg.MaterializeResult(
        value=catalog,
        data_version=dg.DataVersion(sha256),
        metadata={
            "support_matrix": dg.MetadataValue.md(catalog.support_matrix_markdown()),
            "targets": table(rows, columns),
            "supported_cells": len(catalog.supported_pairs()),
            "unsupported_cells": dg.MetadataValue.text(
                ", ".join(f"{d}/{p}" for d, p in catalog.unsupported_pairs()) or "none"
            ),
            "source": dg.MetadataValue.path(str(source)),
            "sha256": sha256,
        },
    )


def _postprocess_summary(p: Postprocess) -> str:
    """The kind and the fields of that kind a reviewer checks (stride for a heatmap, layout for
    dense candidates, padding for self-decoding models...), then the selection."""
    skip = {"kind", "score_threshold", "max_detections", "label_map"}
    fields = ", ".join(
        f"{k} {v}" for k, v in p.model_dump(mode="json").items() if k not in skip and v is not None
    )
    return f"{p.kind}: {fields}; score >= {p.score_threshold}, max {p.max_detections}"


def candidate_summary(ref: CandidateRef) -> str:
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
| input placement | {c.input.resize}{f" ({c.input.letterbox.placement}, pad {c.input.letterbox.pad_value})" if c.input.letterbox else ""} |
| postprocess | {_postprocess_summary(p)} |

| output | shape | dtype | meaning |
|---|---|---|---|
{outputs}
"""


def _candidate_identity(ref: CandidateRef) -> dict:
    return {
        "summary": dg.MetadataValue.md(candidate_summary(ref)),
        "version": ref.contract.version,
        "bundle_sha256": ref.bundle_sha256,
    }


def candidate_result(
    ref: CandidateRef, store: ArtifactStore, already_stored: bool, archived: str
) -> dg.MaterializeResult:
    files = [{"file": name, "sha256": f.sha256, "bytes": f.size} for name, f in ref.files.items()]
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.bundle_sha256),
        metadata={
            **_candidate_identity(ref),
            "model_name": ref.contract.model_name,
            "training_run_id": ref.lineage.training_run_id,
            "dataset_tag": ref.lineage.dataset_tag,
            "git_sha": ref.lineage.git_sha,
            "parameter_count": ref.parameter_count,
            "stored_at": dg.MetadataValue.url(store.uri(ref.prefix)),
            "already_stored": already_stored,
            "files": table(files, {"file": "string", "sha256": "string", "bytes": "int"}),
            "inbox_archive": dg.MetadataValue.path(archived),
        },
    )


def production_result(ref: CandidateRef, bundle_dir: str) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.bundle_sha256),
        metadata={**_candidate_identity(ref), "source": dg.MetadataValue.path(bundle_dir)},
    )


def dataset_result(outcome: GoldenDataset, store: ArtifactStore) -> dg.MaterializeResult:
    ref = outcome.ref
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.tag),
        metadata={
            "dataset_tag": ref.tag,
            "frames": table(
                [{"split": k, "images": v} for k, v in ref.counts.items()],
                {"split": "string", "images": "int"},
            ),
            "frame_size_hw": dg.MetadataValue.text(f"{ref.frame_size[0]} x {ref.frame_size[1]}"),
            "files": ref.file_count,
            "generation_seconds": round(outcome.generation_seconds, 1),
            "reused": outcome.reused,
            "location": dg.MetadataValue.url(store.uri(ref.prefix)),
        },
    )


def slice_catalog_result(
    outcome: SliceCounts, slices_sha256: str, min_test_images: int
) -> dg.MaterializeResult:
    thin = outcome.thin_test_slices
    return dg.MaterializeResult(
        value=outcome.ref,
        data_version=dg.DataVersion(f"{slices_sha256[:16]}-{outcome.ref.dataset_tag}"),
        metadata={
            "slices": table(
                outcome.rows,
                {"slice": "string", "critical": "bool", **dict.fromkeys(SPLITS, "int")},
            ),
            "critical": dg.MetadataValue.text(", ".join(outcome.ref.critical)),
            "thin_test_slices": dg.MetadataValue.text(
                ", ".join(thin) if thin else f"none (every slice has >= {min_test_images} test images)"
            ),
        },
    )


def calibration_shard_result(ref: CalibrationShardRef) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.shard.sha256),
        metadata={
            "frames": len(ref.image_ids),
            "per_stratum": table(
                [{"stratum": k, "frames": v} for k, v in ref.per_stratum.items()],
                {"stratum": "string", "frames": "int"},
            ),
            "shard": dg.MetadataValue.url(ref.shard.uri),
        },
    )


def replay_result(outcome: ReplayLogs) -> dg.MaterializeResult:
    ref = outcome.ref
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.manifest.sha256),
        metadata={
            "sequences": table(
                ref.sequences,
                {
                    "sequence_id": "string",
                    "scenario": "string",
                    "weather": "string",
                    "lighting": "string",
                    "frames": "int",
                    "fps": "float",
                },
            ),
            "annotated_boxes": outcome.annotated_boxes,
        },
    )
