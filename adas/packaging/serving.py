"""Serving artifacts of a target cell: the Triton repository, its contract test, the signed pack."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adas.detector.postprocess import Detections, decode
from adas.detector.preprocess import normalize
from adas.intake.refs import DatasetRef, StoredFile
from adas.intake.stored import read_json, stored_file
from adas.packaging.build import load_frames
from adas.packaging.contract_smoke import ContractSmokeReport, run_contract_smoke
from adas.packaging.licenses import license_report
from adas.packaging.ort_engines import OrtEngine
from adas.packaging.pack import (
    EXPORT_REPORT_FILE,
    MANIFEST_FILE,
    build_export_report,
    container_tag,
    load_serving_config,
    write_container_context,
    write_json,
)
from adas.packaging.refs import EngineRef, ExportRef, PackRef, StagedRef, TritonRepositoryRef
from adas.packaging.sbom import build_sbom, write_sbom
from adas.packaging.signing import load_or_create_signing_key, sign_pack, verify_pack
from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.vulnscan import scan
from adas.settings import AdasHome
from adas.storage import ArtifactStore, sha256_file

TRITON_DIR = "triton"


def serving_mode(runtime: str, cpu_serving: str) -> str:
    return "tensorrt" if runtime == "tensorrt" else cpu_serving


def _tree_digest(files: dict[str, StoredFile]) -> str:
    return hashlib.sha256(
        "".join(f"{k}\0{v.sha256}\n" for k, v in sorted(files.items())).encode()
    ).hexdigest()


@dataclass
class BuiltRepository:
    ref: TritonRepositoryRef
    local_root: Path
    model_names: list[str]
    serving: str


def build_repository(
    store: ArtifactStore, engine: EngineRef, workdir: Path, cpu_serving: str
) -> BuiltRepository:
    """Write the repository for ``engine`` and store it under ``<pack prefix>/triton/``."""
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
    )
    prefix = f"{engine.prefix}/{TRITON_DIR}"
    files = {f.path: stored_file(store, f"{prefix}/{f.path}", repo.root / f.path) for f in repo.files}
    inference_config = stored_file(store, f"{prefix}/inference_config.json", repo.inference_config_path)
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
    outputs = runner.run(normalize(frames, contract.input.normalization))
    return decode(outputs, contract.postprocess, [c.id for c in contract.classes])


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


def assemble_pack(
    store: ArtifactStore,
    engine: EngineRef,
    triton: TritonRepositoryRef,
    export: ExportRef,
    staged: StagedRef,
    workdir: Path,
    log: Callable[[str], None] = print,
) -> PackOutcome:
    """Gather, scan, sign and store the pack; ``pack_manifest.json`` goes in last."""
    contract, lineage = engine.contract, engine.candidate.lineage
    pack = workdir / "pack"
    model_name = Path(engine.engine.key).name
    _copy(store, engine.engine, pack / model_name)
    _copy(store, export.torch_program, pack / Path(export.torch_program.key).name)
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

    log("SBOM, license policy and vulnerability scan")
    model_files = {p.name: p for p in (pack / model_name, pack / Path(export.torch_program.key).name)}
    sbom = build_sbom(model_files, component_name=contract.model_name, version=contract.version)
    write_sbom(pack / "sbom.cdx.json", sbom)
    licenses = license_report(sbom)
    write_json(pack / "license_report.json", licenses.model_dump(mode="json"))
    vulns = scan(pack / "sbom.cdx.json")
    write_json(pack / "vulnerability_scan.json", vulns.model_dump(mode="json"))

    serving = load_serving_config()
    tag = container_tag(serving, contract, lineage)
    container = write_container_context(pack / "container", serving, tag, engine.runtime)
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

    key = load_or_create_signing_key(AdasHome.from_env().keys)
    signatures = sign_pack(pack, key)
    log(f"signed {len(signatures)} files (key {key.key_id})")
    files = {
        p.relative_to(pack).as_posix(): stored_file(
            store, f"{engine.prefix}/{p.relative_to(pack).as_posix()}", p
        )
        for p in sorted(pack.rglob("*"))
        if p.is_file()
    }
    manifest_body = {
        "schema_version": 1,
        "created_at": datetime.now(UTC).isoformat(),
        "model": {"task": contract.task, "name": contract.model_name, "version": contract.version},
        "target": {"device": engine.device, "precision": engine.precision, "runtime": engine.runtime},
        "container_tag": tag,
        "signing_key_id": key.key_id,
        "files": {rel: f.sha256 for rel, f in files.items()},
    }
    manifest = stored_file(
        store,
        f"{engine.prefix}/{MANIFEST_FILE}",
        data=json.dumps(manifest_body, indent=2, sort_keys=True).encode(),
    )
    wandb_name = log_pack_artifact(engine, manifest_body, store.uri(engine.prefix))
    ref = PackRef(
        engine=engine,
        prefix=engine.prefix,
        manifest=manifest,
        files=files,
        container_tag=tag,
        public_key=files["cosign.pub"],
    )
    summary = (
        f"### {contract.model_name} {contract.version} for {engine.device}/{engine.precision}\n\n"
        f"- container: `{tag}` (base image {'pinned' if container['pinned'] else '**not pinned**'})\n"
        f"- files: {len(files)} ({len(signatures)} signed, key `{key.key_id}`)\n"
        f"- licenses: {'passed' if licenses.passed else '**failed**'}; vulnerability scan: {vulns.status}"
        + (f" ({vulns.reason})" if vulns.reason else "")
        + f"\n- W&B artifact: `{wandb_name}`\n"
    )
    return PackOutcome(ref, len(signatures), summary, licenses.to_markdown(), vulns.to_markdown(), wandb_name)


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


def log_pack_artifact(engine: EngineRef, manifest: dict[str, Any], uri: str) -> str:
    """Record the pack as a W&B artifact (offline by default) linking dataset, git SHA and run."""
    import wandb

    lineage = engine.candidate.lineage
    home = AdasHome.from_env()
    home.wandb.mkdir(parents=True, exist_ok=True)
    name = f"{engine.contract.model_name}-{engine.device}-{engine.precision}"
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", "adas-packaging"),
        mode=os.environ.get("WANDB_MODE", "offline"),  # type: ignore[arg-type]
        dir=str(home.wandb),
        job_type="package",
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
            },
        )
        artifact.add_reference(uri if "://" in uri else f"file://{uri}", checksum=False)
        run.log_artifact(artifact, aliases=[engine.contract.version])
    finally:
        run.finish()
    return f"{name}:{engine.contract.version}"


def verify_stored_pack(
    store: ArtifactStore, pack: PackRef, public_key_pem: bytes | str, workdir: Path
) -> list[str]:
    """Re-hash every file against the manifest and verify every signature with a pinned key."""
    manifest = read_json(store, pack.manifest)
    for rel, sha in manifest["files"].items():
        _copy(store, StoredFile(key=f"{pack.prefix}/{rel}", uri="", sha256=sha, size=0), workdir / rel)
    return verify_pack(workdir, public_key_pem)


__all__ = [
    "assemble_pack",
    "build_and_smoke_repository",
    "build_repository",
    "package_cell",
    "smoke_test_repository",
    "verify_stored_pack",
]
