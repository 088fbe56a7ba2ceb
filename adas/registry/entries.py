"""Registry entries built from what the pipeline produced: pack, evaluation, simulation.

Dagster-free: the ``registry_entry`` asset, the CLI and the tests call these with the
descriptors the upstream assets hand downstream.
"""

from __future__ import annotations

from typing import Any

from adas.catalog import TargetCatalog
from adas.cell import supported_cells
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.intake.refs import StoredFile
from adas.intake.stored import read_json
from adas.packaging.refs import EngineRef, PackRef, PublishedPackRef, TritonRepositoryRef
from adas.registry.models import (
    EntryBody,
    EntryPointers,
    Performance,
    Pointer,
    RegistryError,
    Security,
    SliceRow,
    Verdict,
)
from adas.simulation.refs import SimVerdictRef
from adas.storage import ArtifactStore

# Reports an entry pins (small, human-facing); heavy intermediates such as per-frame predictions
# and simulation clips stay out, so retention may prune them for old versions.
REPORT_FILES = frozenset(
    {
        "eval_report.json",
        "evaluation_summary.md",
        "slice_metrics.parquet",
        "robustness_report.json",
        "latency_summary.json",
        "gate_verdict.json",
        "blocking_report.md",
        "sim_verdict.json",
        "sim_verdict.md",
    }
)


def pointer(f: StoredFile) -> Pointer:
    return Pointer(key=f.key, uri=f.uri, sha256=f.sha256, size=f.size)


def wandb_artifact_name(engine: EngineRef) -> str:
    """The name ``log_pack_artifact`` gives the pack's W&B artifact (``name:version`` alias)."""
    return f"{engine.contract.model_name}-{engine.device}-{engine.precision}:{engine.contract.version}"


def _points(v: float | None) -> float | None:
    return None if v is None else round(100.0 * v, 2)


def performance_and_slices(report: EvalReportRef) -> tuple[Performance, list[SliceRow]]:
    snap, prod, evidence = report.snapshot, report.production_snapshot, report.evidence
    perf = Performance(
        AP=snap.AP,
        AP50=snap.AP50,
        per_class_AP=dict(snap.per_class_AP),
        ece=snap.ece,
        latency_p50_ms=report.latency.p50_ms if report.latency else None,
        latency_p95_ms=report.latency.p95_ms if report.latency else None,
        latency_source=report.latency.source if report.latency else None,
        production_version=prod.version if prod else None,
        production_AP=prod.AP if prod else None,
        eval_frames=report.frames,
        eval_dataset_tag=report.dataset_tag,
        delta_intervals={} if evidence is None else {k: d.points() for k, d in evidence.overall.items()},
    )
    rows = []
    for name, s in sorted(snap.slices.items()):
        p = prod.slices.get(name) if prod else None
        delta = None if s.AP is None or p is None or p.AP is None else round(100.0 * (s.AP - p.AP), 2)
        interval = evidence.delta("AP", name) if evidence is not None else None
        rows.append(
            SliceRow(
                slice=name,
                AP=s.AP,
                production_AP=p.AP if p else None,
                delta_points=delta,
                images=s.images,
                critical=s.critical,
                delta_interval=interval.points() if interval is not None else None,
            )
        )
    return perf, rows


def evaluation_verdict(gate: GateRef) -> Verdict:
    v = gate.verdict
    return Verdict(
        kind="evaluation",
        passed=gate.passed,
        version=gate.version,
        device=gate.device,
        precision=gate.precision,
        rationale=v.rationale,
        failing=[f.slice for f in v.failing_slices] + [g.name for g in v.failed],
        report=pointer(gate.files["gate_verdict.json"]) if "gate_verdict.json" in gate.files else None,
        amber=[d.quote for d in v.amber] if v.verdict == "amber" else [],
    )


def simulation_verdict(sim: SimVerdictRef) -> Verdict:
    return Verdict(
        kind="simulation",
        passed=sim.green,
        version=sim.version,
        device=sim.device,
        precision=sim.precision,
        rationale=sim.rationale,
        failing=[f"{c.scope}:{c.name}" for c in sim.checks if c.status == "fail"],
        report=pointer(sim.files["sim_verdict.json"]) if "sim_verdict.json" in sim.files else None,
        amber=[f"{c.scope} {c.name} {c.interval or 'undefined'}" for c in sim.checks if c.status == "amber"]
        if sim.verdict == "amber"
        else [],
    )


def _security(store: ArtifactStore, pack: PackRef) -> Security:
    files = pack.files
    vuln = read_json(store, files["vulnerability_scan.json"]) if "vulnerability_scan.json" in files else None
    lic = read_json(store, files["license_report.json"]) if "license_report.json" in files else None
    return Security(
        sbom=pointer(files["sbom.cdx.json"]) if "sbom.cdx.json" in files else None,
        vulnerability_status=vuln.get("status") if vuln else None,
        vulnerability_counts=dict(vuln.get("counts") or {}) if vuln else {},
        vulnerability_reason=vuln.get("reason") if vuln else None,
        licenses_passed=bool(lic.get("passed")) if lic else None,
    )


def check_published(pack: PackRef, published: PublishedPackRef) -> None:
    """``published`` must be this very pack on this cell: an artifact of another pack (an older
    publication, another cell) would pin a digest whose bytes the entry does not describe."""
    engine = pack.engine
    if (published.device, published.precision) != (engine.device, engine.precision):
        raise RegistryError(
            f"{published.reference} is the pack of {published.device}/{published.precision}, "
            f"not of {engine.device}/{engine.precision}"
        )
    if published.pack_manifest_sha256 != pack.manifest.sha256:
        raise RegistryError(
            f"{published.reference} holds the pack whose manifest has sha256 {published.pack_manifest_sha256}, "
            f"but model_pack is {pack.prefix} (manifest sha256 {pack.manifest.sha256}): "
            "publish this pack first (materialize published_pack)"
        )


def entry_from_pack(
    store: ArtifactStore,
    pack: PackRef,
    gate: GateRef,
    sim: SimVerdictRef,
    report: EvalReportRef,
    catalog: TargetCatalog,
    published: PublishedPackRef | None = None,
) -> EntryBody:
    """The entry of one target cell: the pack's pointers (with its OCI reference when it was
    ``published``), its evaluation and simulation."""
    if published is not None:
        check_published(pack, published)
    engine = pack.engine
    lineage = engine.candidate.lineage
    perf, slices = performance_and_slices(report)
    budget = catalog.target(engine.device).latency_budget_ms.p95
    reports = {f"evaluation/{k}": pointer(v) for k, v in report.files.items() if k in REPORT_FILES}
    reports.update({f"evaluation/{k}": pointer(v) for k, v in gate.files.items() if k in REPORT_FILES})
    reports.update({f"simulation/{k}": pointer(v) for k, v in sim.files.items() if k in REPORT_FILES})
    docker = pack.files.get("container/Dockerfile")
    return EntryBody(
        **_model_identity(engine),
        pointers=EntryPointers(
            pack_prefix=pack.prefix,
            pack_uri=store.uri(pack.prefix),
            manifest=pointer(pack.manifest),
            artifacts={rel: pointer(f) for rel, f in sorted(pack.files.items())},
            public_key_sha256=pack.public_key.sha256,
            wandb_artifact=wandb_artifact_name(engine),
            container_tag=pack.container_tag,
            container_context_sha256=docker.sha256 if docker else None,
            git_sha=lineage.git_sha,
            dataset_tag=lineage.dataset_tag,
            training_run_id=lineage.training_run_id,
            bundle_sha256=engine.candidate.bundle_sha256,
            oci_reference=published.reference if published else None,
            oci_tag=published.tagged if published else None,
            serving_image=published.serving_image_reference if published else None,
        ),
        performance=perf,
        slices=slices,
        latency_budget_ms={"p95": budget},
        supported_targets=[c.target_name for c in supported_cells(catalog)],
        calibration_cache_version=engine.calibration_cache.sha256[:16] if engine.calibration_cache else None,
        evaluation=evaluation_verdict(gate),
        simulation=simulation_verdict(sim),
        security=_security(store, pack),
        reports=reports,
    )


def _model_identity(engine: EngineRef) -> dict[str, Any]:
    """What an entry says the model is: name, task, version, cell, runtime, classes."""
    contract = engine.contract
    return {
        "model_name": contract.model_name,
        "task": contract.task,
        "version": contract.version,
        "device": engine.device,
        "precision": engine.precision,
        "runtime": engine.runtime,
        "classes": [c.name for c in contract.classes],
    }


def adopted_entry(
    store: ArtifactStore, engine: EngineRef, repository: TritonRepositoryRef, catalog: TargetCatalog
) -> EntryBody:
    """The model already in production when the registry first sees a target: adopted as is,
    with pointers to its engine and a Triton repository built from it (``adopted=True``: no
    signed pack, no governance; it exists so the first canary has a production arm)."""
    lineage = engine.candidate.lineage
    artifacts = {"engine": pointer(engine.engine)}
    artifacts.update({f"triton/{rel}": pointer(f) for rel, f in sorted(repository.files.items())})
    if engine.calibration_cache is not None:
        artifacts["calibration.cache"] = pointer(engine.calibration_cache)
    return EntryBody(
        **_model_identity(engine),
        pointers=EntryPointers(
            pack_prefix=engine.prefix,
            pack_uri=store.uri(engine.prefix),
            manifest=None,
            artifacts=artifacts,
            git_sha=lineage.git_sha,
            dataset_tag=lineage.dataset_tag,
            training_run_id=lineage.training_run_id,
            bundle_sha256=engine.candidate.bundle_sha256,
        ),
        performance=Performance(),
        latency_budget_ms={"p95": catalog.target(engine.device).latency_budget_ms.p95},
        supported_targets=[c.target_name for c in supported_cells(catalog)],
        calibration_cache_version=engine.calibration_cache.sha256[:16] if engine.calibration_cache else None,
        adopted=True,
    )


def triton_files(body: EntryBody) -> dict[str, Pointer]:
    """``relative path in the repository -> pointer`` of the entry's Triton model repository."""
    return {
        rel.removeprefix("triton/"): p
        for rel, p in body.pointers.artifacts.items()
        if rel.startswith("triton/") and not rel.endswith(".sig")
    }
