"""Serving artifacts of a target cell: the Triton repository, its contract test, the signed pack."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adas.detector.decoders import Detections, decode
from adas.detector.preprocess import preprocess
from adas.intake.refs import DatasetRef, StoredFile
from adas.intake.stored import read_json
from adas.packaging.build import load_frames
from adas.packaging.config import TritonConfig, packaging_config_from_env
from adas.packaging.contract_smoke import ContractSmokeReport, run_contract_smoke
from adas.packaging.licenses import LicenseReport, license_report
from adas.packaging.ort_engines import OrtEngine
from adas.packaging.pack import (
    EXPORT_REPORT_FILE,
    build_export_report,
    container_tag,
    load_serving_config,
    write_container_context,
    write_json,
)
from adas.packaging.publish import (
    PublishedPack,
    fetch_pack,
    find_published_pack,
    publish_file,
    publish_pack,
)
from adas.packaging.refs import (
    EngineRef,
    ExportRef,
    PackRef,
    PublishedPackRef,
    StagedRef,
    TritonRepositoryRef,
)
from adas.packaging.sbom import build_sbom, write_sbom
from adas.packaging.signing import (
    MANIFEST_FILE,
    PUBLIC_KEY_FILE,
    PackCheck,
    SignatureError,
    check_pack,
    listed_files,
    load_signing_key,
    sign_pack,
)
from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.trust import TrustFile, UntrustedKeyError, load_trust_file, now_utc, trust_file_path
from adas.packaging.vulnscan import VulnScanReport, scan
from adas.settings import AdasHome
from adas.storage import ArtifactStore, sha256_file

TRITON_DIR = "triton"
# The W&B artifact entry naming the published OCI artifact (oci://host/repository@sha256:...).
OCI_WANDB_ENTRY = "oci-artifact"


def serving_mode(runtime: str, cpu_serving: str) -> str:
    return "tensorrt" if runtime == "tensorrt" else cpu_serving


def _tree_digest(files: dict[str, StoredFile]) -> str:
    return hashlib.sha256(
        "".join(f"{k}\0{v.sha256}\n" for k, v in sorted(files.items())).encode()
    ).hexdigest()


def repository_settings(triton: TritonConfig | None = None) -> dict[str, int]:
    """``write_triton_repository``'s batching and instance arguments from ``packaging.yaml``'s
    ``triton`` section (or ``triton``): what every served repository, and its benchmark, uses."""
    triton = triton or packaging_config_from_env().triton
    return {
        "max_batch_size": triton.max_batch_size,
        "max_queue_delay_us": triton.max_queue_delay_us,
        "instance_count": triton.engine_instances,
        "intra_op_threads": triton.engine_intra_op_threads,
        "step_instance_count": triton.step_instances,
    }


@dataclass
class BuiltRepository:
    ref: TritonRepositoryRef
    local_root: Path
    model_names: list[str]
    serving: str


def build_repository(
    store: ArtifactStore,
    engine: EngineRef,
    workdir: Path,
    cpu_serving: str,
    triton: TritonConfig | None = None,
) -> BuiltRepository:
    """Write the repository for ``engine`` and store it under ``<pack prefix>/triton/``, batched
    and with the instances ``triton`` says (default: ``packaging.yaml``'s ``triton``)."""
    serving = serving_mode(engine.runtime, cpu_serving)
    engine_path = store.fetch(engine.engine.key, expected_sha256=engine.engine.sha256)
    repo = write_triton_repository(
        workdir / TRITON_DIR,
        engine.contract,
        engine_path,
        device=engine.device,
        precision=engine.precision,
        runtime=engine.runtime,  # type: ignore[arg-type]
        serving=serving,  # type: ignore[arg-type]
        **repository_settings(triton),
    )
    prefix = f"{engine.prefix}/{TRITON_DIR}"
    # Write-once: an adopted production entry may point at these files.
    files = {f.path: publish_file(store, f"{prefix}/{f.path}", repo.root / f.path) for f in repo.files}
    inference_config = publish_file(store, f"{prefix}/inference_config.json", repo.inference_config_path)
    files["inference_config.json"] = inference_config
    ref = TritonRepositoryRef(
        prefix=prefix,
        serving=serving,
        ensemble=repo.ensemble,
        files=files,
        inference_config=inference_config,
        digest=_tree_digest(files),
    )
    return BuiltRepository(ref, repo.root, repo.model_names, serving)


def reference_detections(store: ArtifactStore, engine: EngineRef, frames: Any) -> list[Detections]:
    """What our own engine + decode say on ``frames``: the contract test's expected answer."""
    contract = engine.contract
    runner = OrtEngine(
        store.fetch(engine.engine.key, expected_sha256=engine.engine.sha256), contract=contract
    )
    x, geometry = preprocess(frames, contract.input)  # as the Triton preprocess places them
    return decode(runner.run(x, geometry.source_hw), contract, geometry=geometry)


def smoke_test_repository(
    store: ArtifactStore, engine: EngineRef, dataset: DatasetRef, root: Path, n_frames: int
) -> ContractSmokeReport:
    coco = read_json(store, dataset.manifests["golden_val"])
    frames = load_frames(store, dataset, [img["file_name"] for img in coco["images"][:n_frames]])
    return run_contract_smoke(root, engine.contract, frames, reference_detections(store, engine, frames))


@dataclass
class ServedRepository:
    built: BuiltRepository
    smoke: ContractSmokeReport


def build_and_smoke_repository(
    store: ArtifactStore,
    engine: EngineRef,
    dataset: DatasetRef,
    cpu_serving: str,
    smoke_frames: int,
    log: Callable[[str], None] = print,
) -> ServedRepository:
    """Write and store the repository of ``engine``, then serve it from a real Triton server and
    check the contract on ``smoke_frames`` validation frames (HTTP and gRPC)."""
    with tempfile.TemporaryDirectory(prefix="triton-") as tmp:
        built = build_repository(store, engine, Path(tmp), cpu_serving)
        log(f"repository written ({len(built.ref.files)} files); starting Triton for the contract test")
        smoke = smoke_test_repository(store, engine, dataset, built.local_root, smoke_frames)
    return ServedRepository(built, smoke)


@dataclass
class PackOutcome:
    ref: PackRef
    signed: int
    summary_markdown: str
    license_markdown: str
    vuln_markdown: str
    wandb_artifact: str


def _copy(store: ArtifactStore, f: StoredFile, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.fetch(f.key, expected_sha256=f.sha256), dest)
    return dest


def _optional_json(store: ArtifactStore, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(key))
    except FileNotFoundError:
        return None


def program_pack_name(export: ExportRef) -> str:
    """The bundle's own model file in the pack, beside the engine: an ONNX bundle's
    ``model.onnx`` would take the engine's name, so it is ``bundle-model.onnx`` there."""
    name = Path(export.torch_program.key).name
    return f"bundle-{name}" if export.candidate.contract.model_format == "onnx" else name


def _gather_inputs(
    store: ArtifactStore,
    engine: EngineRef,
    triton: TritonRepositoryRef,
    export: ExportRef,
    staged: StagedRef,
    pack: Path,
) -> dict[str, dict[str, Any] | None]:
    """Copy what the pack is made of into ``pack`` (every file hash-verified); the reports."""
    model_name = Path(engine.engine.key).name
    _copy(store, engine.engine, pack / model_name)
    _copy(store, export.torch_program, pack / program_pack_name(export))
    if engine.calibration_cache is not None:
        _copy(store, engine.calibration_cache, pack / "calibration.cache")
    for rel, f in triton.files.items():
        _copy(store, f, pack / TRITON_DIR / rel)
    shutil.copyfile(pack / TRITON_DIR / "inference_config.json", pack / "inference_config.json")
    (pack / TRITON_DIR / "inference_config.json").unlink()
    _copy(store, staged.requirements_lock, pack / "requirements.lock")
    reports = {
        name: _optional_json(store, f"{engine.prefix}/{name}")
        for name in ("equivalence_report.json", "latency_report.json")
    }
    for name, body in reports.items():
        if body is not None:
            write_json(pack / name, body)
    return reports


def _inputs_digest(pack: Path) -> str:
    """What the pack is made of, as one digest: every file gathered so far with its sha256."""
    files = {rel: sha256_file(pack / rel)[0] for rel in listed_files(pack)}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def _pack_ref(engine: EngineRef, published: PublishedPack) -> PackRef:
    return PackRef(
        engine=engine,
        prefix=published.prefix,
        manifest=published.manifest,
        files=published.files,
        container_tag=published.body["container_tag"],
        public_key=published.files[PUBLIC_KEY_FILE],
    )


def _summary(engine: EngineRef, published: PublishedPack, signed: int, lines: list[str]) -> str:
    contract, signing = engine.contract, published.body["signing"]
    return (
        f"### {contract.model_name} {contract.version} for {engine.device}/{engine.precision}\n\n"
        f"- pack: `{published.prefix}` (write-once)\n"
        f"- container: `{published.body['container_tag']}`\n"
        f"- files: {len(published.files) + 1} ({signed} signed; manifest signed by key `{signing['key_id']}` "
        f"at {signing['signed_at']})\n" + "".join(f"- {line}\n" for line in lines)
    )


def _reused(engine: EngineRef, published: PublishedPack, check: PackCheck, local: Path) -> PackOutcome:
    """The outcome of a re-materialization that reuses ``published`` (verified, copied to ``local``)."""
    licenses = LicenseReport.model_validate_json((local / "license_report.json").read_bytes())
    vulns = VulnScanReport.model_validate_json((local / "vulnerability_scan.json").read_bytes())
    summary = _summary(
        engine, published, len(check.signed), ["re-materialized from the same inputs: nothing written"]
    )
    return PackOutcome(
        _pack_ref(engine, published),
        len(check.signed),
        summary,
        licenses.to_markdown(),
        vulns.to_markdown(),
        wandb_artifact_name(engine),
    )


def _require_trusted(trust: TrustFile, key_id: str, at: datetime) -> None:
    """Refuse to sign with a key the trust root does not vouch for now: such a pack could
    never pass governance, so it is not made."""
    try:
        trust.signer(key_id, at)
    except UntrustedKeyError as exc:
        raise SignatureError(
            f"the signing key cannot sign packs: {exc} (locally: `adas-registry keys init` or "
            "`keys rotate`; production: enrol the key in the reviewed trust file)"
        ) from exc


def assemble_pack(
    store: ArtifactStore,
    engine: EngineRef,
    triton: TritonRepositoryRef,
    export: ExportRef,
    staged: StagedRef,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> PackOutcome:
    """Gather, scan, sign and publish the pack, write-once (:mod:`adas.packaging.publish`).

    When a pack built from the same inputs is already published and still verifies against the
    trust root, it is the result and nothing is written; otherwise the new pack goes to its own
    content-addressed folder, ``pack_manifest.json`` last.
    """
    contract, lineage = engine.contract, engine.candidate.lineage
    pack = workdir / "pack"
    reports = _gather_inputs(store, engine, triton, export, staged, pack)
    model_name = Path(engine.engine.key).name
    serving = load_serving_config()
    tag = container_tag(serving, contract, lineage)
    container = write_container_context(pack / "container", serving, tag, engine.runtime)
    inputs_digest = _inputs_digest(pack)
    trust = load_trust_file(trust_file_path())

    found = find_published_pack(store, engine.prefix, inputs_digest, trust, workdir / "published", log=log)
    if found is not None:
        log(f"same inputs as the published pack {found[0].prefix}: reused, nothing written")
        return _reused(engine, *found, workdir / "published" / Path(found[0].prefix).name)

    key = load_signing_key(AdasHome.from_env().keys)
    signed_at = now_utc()
    _require_trusted(trust, key.key_id, signed_at)

    log("SBOM, license policy and vulnerability scan")
    model_files = {p.name: p for p in (pack / model_name, pack / program_pack_name(export))}
    sbom = build_sbom(model_files, component_name=contract.model_name, version=contract.version)
    write_sbom(pack / "sbom.cdx.json", sbom)
    licenses = license_report(sbom)
    write_json(pack / "license_report.json", licenses.model_dump(mode="json"))
    vulns = scan(pack / "sbom.cdx.json")
    write_json(pack / "vulnerability_scan.json", vulns.model_dump(mode="json"))

    environment = read_json(store, staged.environment)
    coverage = read_json(store, export.coverage)
    files_so_far = {
        p.relative_to(pack).as_posix(): sha256_file(p)[0] for p in sorted(pack.rglob("*")) if p.is_file()
    }
    report = build_export_report(
        contract=contract,
        lineage=lineage,
        device=engine.device,
        precision=engine.precision,
        runtime=engine.runtime,
        engine_build=engine.build,
        export_details={"onnx": export.onnx.model_dump(), "runtimes_supported": export.runtimes_supported},
        coverage=coverage,
        environment=environment,
        equivalence=reports["equivalence_report.json"],
        latency=reports["latency_report.json"],
        contract_smoke={"passed": True, "repository_digest": triton.digest, "serving": triton.serving},
        security={
            "sbom": "sbom.cdx.json",
            "licenses_passed": licenses.passed,
            "vulnerability_scan": vulns.status,
            "vulnerability_counts": vulns.counts,
            "vulnerability_reason": vulns.reason,
        },
        container=container,
        files=files_so_far,
    )
    write_json(pack / EXPORT_REPORT_FILE, report)

    body = sign_pack(
        pack,
        key,
        {
            "model": {"task": contract.task, "name": contract.model_name, "version": contract.version},
            "target": {"device": engine.device, "precision": engine.precision, "runtime": engine.runtime},
            "container_tag": tag,
            "inputs_digest": inputs_digest,
        },
        signed_at=signed_at,
    )
    signed = len([rel for rel in body["files"] if rel.endswith(".sig")])
    log(f"signed {signed} files and the manifest (key {key.key_id})")
    published = publish_pack(store, engine.prefix, pack)
    wandb_name = log_pack_artifact(engine, body, store.uri(published.prefix))
    summary = _summary(
        engine,
        published,
        signed,
        [
            f"base image {'pinned' if container['pinned'] else '**not pinned**'}",
            f"licenses: {'passed' if licenses.passed else '**failed**'}; vulnerability scan: {vulns.status}"
            + (f" ({vulns.reason})" if vulns.reason else ""),
            f"W&B artifact: `{wandb_name}`",
        ],
    )
    return PackOutcome(
        _pack_ref(engine, published), signed, summary, licenses.to_markdown(), vulns.to_markdown(), wandb_name
    )


def package_cell(
    store: ArtifactStore,
    engine: EngineRef,
    triton: TritonRepositoryRef,
    export: ExportRef,
    staged: StagedRef,
    log: Callable[[str], None] = print,
) -> PackOutcome:
    """:func:`assemble_pack` in a scratch folder of its own."""
    with tempfile.TemporaryDirectory(prefix="pack-") as tmp:
        return assemble_pack(store, engine, triton, export, staged, Path(tmp), log=log)


def log_pack_artifact(
    engine: EngineRef, manifest: dict[str, Any], uri: str, published: PublishedPackRef | None = None
) -> str:
    """Record the pack as a W&B artifact (offline by default) linking dataset, git SHA and run.
    Once published (``published``), a new version of the same artifact (its version alias moves
    to it) also carries the OCI reference and digest the registry entry pins, in its metadata and
    as an ``oci://`` reference (tracked, not downloaded: W&B has no OCI storage handler)."""
    import wandb

    lineage = engine.candidate.lineage
    home = AdasHome.from_env()
    home.wandb.mkdir(parents=True, exist_ok=True)
    name = wandb_artifact_name(engine).split(":")[0]
    oci = (
        {"oci_reference": published.reference, "oci_digest": published.digest, "oci_tag": published.tagged}
        if published is not None
        else {}
    )
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "adas-packaging"),
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        dir=str(home.wandb),
        job_type="publish" if published is not None else "package",
        config={"device": engine.device, "precision": engine.precision},
        reinit="finish_previous",
    )
    try:
        artifact = wandb.Artifact(
            name,
            type="model",
            metadata={
                "version": engine.contract.version,
                "dataset_tag": lineage.dataset_tag,
                "git_sha": lineage.git_sha,
                "training_run_id": lineage.training_run_id,
                "pack_uri": uri,
                "files": manifest["files"],
                **oci,
            },
        )
        artifact.add_reference(uri if "://" in uri else f"file://{uri}", checksum=False)
        if published is not None:
            artifact.add_reference(f"oci://{published.reference}", name=OCI_WANDB_ENTRY, checksum=False)
        run.log_artifact(artifact, aliases=[engine.contract.version])
    finally:
        run.finish()
    return wandb_artifact_name(engine)


def wandb_artifact_name(engine: EngineRef) -> str:
    """``<model>-<device>-<precision>:<version>``: the pack's W&B artifact and alias."""
    return f"{engine.contract.model_name}-{engine.device}-{engine.precision}:{engine.contract.version}"


def verify_stored_pack(store: ArtifactStore, pack: PackRef, trust: TrustFile, workdir: Path) -> list[str]:
    """Copy the pack out of the store (each file against the sha256 the signed manifest lists)
    and verify it against the trust root; returns the files proven, else raises
    :class:`SignatureError` naming every problem."""
    body = json.loads(store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256))
    fetch_pack(store, pack.prefix, body, workdir)
    shutil.copyfile(
        store.fetch(pack.manifest.key, expected_sha256=pack.manifest.sha256), workdir / MANIFEST_FILE
    )
    check = check_pack(workdir, trust)
    if not check.ok:
        raise SignatureError("; ".join(check.problems) or f"{pack.prefix}: pack has no files")
    return check.files


__all__ = [
    "assemble_pack",
    "build_and_smoke_repository",
    "build_repository",
    "package_cell",
    "repository_settings",
    "smoke_test_repository",
    "verify_stored_pack",
]
