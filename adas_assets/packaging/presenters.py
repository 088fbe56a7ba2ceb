"""Packaging results as Dagster materializations: metadata tables, links, data versions, checks."""

import dagster as dg

from adas.packaging.build import ExportOutcome
from adas.packaging.engines import CellEngine
from adas.packaging.refs import PublishedPackRef
from adas.packaging.serving import PackOutcome, ServedRepository
from adas.packaging.staging import StagingOutcome
from adas.storage import ArtifactStore
from adas_assets.metadata import table
from adas_assets.packaging import checks

# Engine build details shown in the engine's "build" table.
_BUILD_FIELDS = (
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


def staged_result(outcome: StagingOutcome) -> dg.MaterializeResult:
    ref, env = outcome.ref, outcome.staged.environment
    lock = ref.requirements_lock
    components = [
        {"component": "python", "version": env["python"]},
        *({"component": k, "version": v or "not installed"} for k, v in env["packages"].items()),
        {"component": "cuda", "version": str(env["cuda"]["torch_cuda"])},
        {"component": "image", "version": env["image_digest"]},
    ]
    ranges = [{"output": k, "min": lo, "max": hi} for k, (lo, hi) in outcome.staged.output_ranges.items()]
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(f"{ref.candidate.bundle_sha256[:16]}-{lock.sha256[:16]}"),
        metadata={
            "environment": table(components, {"component": "string", "version": "string"}),
            "cpu": env["cpu"],
            "requirements_lock": dg.MetadataValue.url(lock.uri),
            "locked_packages": outcome.staged.requirements_lock.count("\n"),
            "output_ranges": table(ranges, {"output": "string", "min": "float", "max": "float"}),
        },
    )


def export_result(outcome: ExportOutcome) -> dg.MaterializeResult:
    ref, d = outcome.ref, outcome.details
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.onnx.sha256),
        metadata={
            "onnx": dg.MetadataValue.url(ref.onnx.uri),
            "opset": d["opset"],
            "nodes": d["node_count"],
            "max_abs_diff_vs_torch": d["max_abs_diff"],
            "op_histogram": table(
                [{"op": k, "count": v} for k, v in sorted(d["op_histogram"].items())],
                {"op": "string", "count": "int"},
            ),
            **{f"coverage_{rt}": dg.MetadataValue.md(md) for rt, md in outcome.coverage_markdown.items()},
            "runtimes_supported": dg.MetadataValue.json(ref.runtimes_supported),
        },
    )


def engine_result(cell: CellEngine) -> dg.MaterializeResult:
    """The engine's metadata and, when the build-time checks ran, their results and reports."""
    ref, details, qa = cell.ref, cell.details, cell.quality
    rows = [{"field": k, "value": str(v)} for k, v in details.items() if k in _BUILD_FIELDS]
    metadata: dict = {
        "device": ref.device,
        "precision": ref.precision,
        "runtime": ref.runtime,
        "engine": dg.MetadataValue.url(ref.engine.uri),
        "engine_sha256": ref.engine.sha256,
        "engine_bytes": ref.engine.size,
        "build": table(rows, {"field": "string", "value": "string"}),
    }
    if ref.calibration_cache is not None:
        excluded = details.get("excluded_nodes") or {}
        metadata["calibration_cache"] = dg.MetadataValue.url(ref.calibration_cache.uri)
        metadata["fp32_fallback_nodes"] = table(
            [{"node": k, "reason": v} for k, v in excluded.items()], {"node": "string", "reason": "string"}
        )
    if qa is None:
        return dg.MaterializeResult(
            value=ref, data_version=dg.DataVersion(ref.engine.sha256), metadata=metadata
        )
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.engine.sha256),
        metadata={
            **metadata,
            "equivalence_report": dg.MetadataValue.url(qa.equivalence_file.uri),
            "latency_report": dg.MetadataValue.url(qa.latency_file.uri),
        },
        check_results=[checks.numerical_equivalence(qa), checks.latency_within_budget(qa, ref.device)],
    )


def repository_result(outcome: ServedRepository, store: ArtifactStore) -> dg.MaterializeResult:
    built = outcome.built
    return dg.MaterializeResult(
        value=built.ref,
        data_version=dg.DataVersion(built.ref.digest),
        metadata={
            "models": dg.MetadataValue.md("\n".join(f"- `{m}`" for m in built.model_names)),
            "serving": built.serving,
            "repository": dg.MetadataValue.url(store.uri(built.ref.prefix)),
            "inference_config": dg.MetadataValue.url(built.ref.inference_config.uri),
        },
        check_results=[checks.triton_contract_smoke(outcome.smoke)],
    )


def pack_result(outcome: PackOutcome, store: ArtifactStore) -> dg.MaterializeResult:
    ref = outcome.ref
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.manifest.sha256),
        metadata={
            "summary": dg.MetadataValue.md(outcome.summary_markdown),
            "container_tag": ref.container_tag,
            "pack": dg.MetadataValue.url(store.uri(ref.prefix)),
            "manifest": dg.MetadataValue.url(ref.manifest.uri),
            "files": len(ref.files),
            "signed_files": outcome.signed,
            "license_report": dg.MetadataValue.md(outcome.license_markdown),
            "vulnerability_scan": dg.MetadataValue.md(outcome.vuln_markdown),
            "wandb_artifact": outcome.wandb_artifact,
        },
    )


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def published_markdown(ref: PublishedPackRef) -> str:
    """What was published where, and which layers this push sent."""
    rows = [
        f"| {layer.group} | `{layer.digest[:19]}…` | {layer.files}"
        f"{f' (+{layer.copies} from the engine layer)' if layer.copies else ''} | {_mib(layer.size)} | "
        f"{'pushed' if layer.uploaded else 'already there'} |"
        for layer in ref.layers
    ]
    return "\n".join(
        [
            f"**`{ref.reference}`**",
            "",
            f"Tag `{ref.tagged}` (the digest is what the registry entry pins; a tag can move).",
            f"Pushed {ref.blobs_pushed} blob(s), {_mib(ref.bytes_pushed)}; "
            f"{ref.blobs_skipped} already in the registry, {_mib(ref.bytes_skipped)} not sent again.",
            *([ref.serving_image[:1].upper() + ref.serving_image[1:] + "."] if ref.serving_image else []),
            *([f"W&B artifact `{ref.wandb_artifact}` carries the digest."] if ref.wandb_artifact else []),
            "",
            "| layer | digest | files | size | this push |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )


def published_result(ref: PublishedPackRef) -> dg.MaterializeResult:
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(ref.digest),
        metadata={
            "summary": dg.MetadataValue.md(published_markdown(ref)),
            "oci_reference": ref.reference,
            "tag": ref.tagged,
            "digest": ref.digest,
            "bytes_pushed": ref.bytes_pushed,
            "bytes_skipped": ref.bytes_skipped,
            "blobs_pushed": ref.blobs_pushed,
            "blobs_skipped": ref.blobs_skipped,
            "serving_image": ref.serving_image,
            **({"serving_image_reference": ref.serving_image_reference} if ref.serving_image_reference else {}),
            "wandb_artifact": ref.wandb_artifact,
        },
    )
