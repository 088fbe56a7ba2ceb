"""Signed model packs built in seconds (no Dagster run): the real pack layout, a real Triton
repository around an untrained detector, real cosign-format signatures, and the upstream
descriptors (PackRef, GateRef, SimVerdictRef, EvalReportRef) the registry consumes."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from adas.cell import Cell
from adas.detector.bundle import build_contract
from adas.evaluation.gates import GateVerdict, Latency, MetricsSnapshot, SliceStat
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.intake.contract import Contract, Lineage, Normalization
from adas.intake.refs import CandidateRef, DatasetRef, StoredFile
from adas.intake.stored import as_stored_file, write_file_index
from adas.packaging.keys import init_local_keys
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_publication import publish_cell
from adas.packaging.publish import pack_folder, publish_pack
from adas.packaging.refs import EngineRef, PackRef, PublishedPackRef, TritonRepositoryRef
from adas.packaging.signing import PRIVATE_KEY_FILE, SigningKey, load_key_file, sign_pack
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.simulation.refs import SimVerdictRef
from adas.storage import ArtifactStore, LocalArtifactStore

MODEL = "test-detector"
TASK = "vehicle-detection-2d"
NORM = Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
LINEAGE = Lineage(training_run_id="test-run", dataset_tag="sim-test", git_sha="abcdef0")
CPU = {"device": "x86-cpu", "precision": "fp32", "runtime": "onnxruntime", "serving": "python-onnxruntime"}


def contract(version: str, model_name: str = MODEL) -> Contract:
    return build_contract(
        version=version,
        model_name=model_name,
        task=TASK,
        normalization=NORM,
        score_threshold=0.3,
        max_detections=32,
    )


def export_untrained(path: Path, seed: int) -> Path:
    """An untrained narrow detector whose amplified heatmap head gives a handful of detections
    per frame; a different ``seed`` gives different detections (a disagreeing model)."""
    import torch

    from adas.detector.model import build_model
    from adas.packaging.export import export_onnx

    torch.manual_seed(seed)
    model = build_model(width=8)
    with torch.no_grad():
        getattr(model.heatmap, "out", model.heatmap).weight.normal_(std=50.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_onnx(model.fuse(), contract("0.0.1"), path)
    return path


def frames(n: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full((n, 96, 384, 3), 90, np.uint8)
    for f in out:
        for _ in range(5):
            x, y = int(rng.integers(0, 360)), int(rng.integers(0, 84))
            f[y : y + 10, x : x + 24] = rng.integers(0, 256, 3)
    return out


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(store: LocalArtifactStore, key: str, data: bytes) -> StoredFile:
    s = store.put_bytes(key, data)
    return StoredFile(key=s.key, uri=s.uri, sha256=s.sha256, size=s.size)


def replay_dataset(store: ArtifactStore, n: int = 8) -> DatasetRef:
    """A small golden dataset of replay frames, stored with its file index as golden_dataset
    stores one (the same bytes each call)."""
    prefix = "datasets/test-replay"
    images, stored = [], []
    for i, frame in enumerate(frames(n)):
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="PNG")
        name = f"images/replay/f{i:03d}.png"
        stored.append(store.put_bytes(f"{prefix}/{name}", buf.getvalue()))
        images.append(
            {
                "id": i,
                "file_name": name,
                "scenario": "merge",
                "weather": ["clear", "fog"][i % 2],
                "lighting": "day",
            }
        )
    replay = {
        "images": images,
        "annotations": [],
        "categories": [],
        "sequences": [{"sequence_id": "s0", "image_ids": list(range(n))}],
    }
    manifest = store.put_bytes(f"{prefix}/replay_sequences.json", json.dumps(replay).encode())
    return DatasetRef(
        tag="test-replay",
        prefix=prefix,
        size="tiny",
        config_hash="0",
        frame_size=[96, 384],
        counts={},
        manifests={"replay_sequences": as_stored_file(manifest)},
        file_count=n,
        file_index=write_file_index(store, prefix, [*stored, manifest]),
    )


def local_signer(key_dir: Path) -> SigningKey:
    """The key of ``key_dir`` after ``adas-registry keys init`` there (its own trust file)."""
    init_local_keys(key_dir, key_dir / TRUST_FILE)
    return load_key_file(key_dir / PRIVATE_KEY_FILE)


def publish_signed(
    store: ArtifactStore, pack: PackRef, client: RegistryClient, key_dir: Path, namespace: str = ""
) -> PublishedPackRef:
    """``publish_cell`` signing with ``key_dir``'s key, trusted by ``key_dir``'s trust file."""
    signer = local_signer(key_dir)
    trust = load_trust_file(key_dir / TRUST_FILE)
    return publish_cell(store, pack, client, signer=signer, trust=trust, namespace=namespace)


@dataclass
class Built:
    pack: PackRef
    gate: GateRef
    sim: SimVerdictRef
    report: EvalReportRef
    triton_dir: Path  # local copy of the pack's Triton repository


def build_pack(
    store: LocalArtifactStore,
    workdir: Path,
    key_dir: Path,
    version: str,
    onnx_file: Path,
    *,
    signed: bool = True,
    scanned: bool = True,
    gate_green: bool = True,
    sim_green: bool = True,
    ap: float = 0.60,
    signer: SigningKey | None = None,
    signed_at: datetime | None = None,
) -> Built:
    """A pack of ``version`` signed by ``signer`` (default: the key of ``key_dir``, enrolled in
    ``key_dir``'s trust file) and published write-once as the packaging stage publishes it."""
    from adas.packaging.triton_repository import write_triton_repository

    c = contract(version)
    device, precision = CPU["device"], CPU["precision"]
    prefix = Cell(device, precision).pack_prefix(TASK, version)
    pack = workdir / f"pack-{version}"
    shutil.rmtree(pack, ignore_errors=True)
    pack.mkdir(parents=True)
    shutil.copyfile(onnx_file, pack / "model.onnx")
    write_triton_repository(pack / "triton", c, onnx_file, **CPU)
    (pack / "triton" / "inference_config.json").rename(pack / "inference_config.json")
    triton_dir = workdir / f"triton-{version}"
    shutil.rmtree(triton_dir, ignore_errors=True)
    shutil.copytree(pack / "triton", triton_dir)
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "components": [{"type": "machine-learning-model", "name": "model.onnx", "version": version}],
    }
    (pack / "sbom.cdx.json").write_text(json.dumps(sbom))
    scan = (
        {"status": "scanned", "scanner": "trivy", "counts": {"critical": 0, "high": 0, "medium": 1, "low": 0}}
        if scanned
        else {"status": "not_scanned", "reason": "no vulnerability database offline", "counts": {}}
    )
    (pack / "vulnerability_scan.json").write_text(json.dumps(scan))
    (pack / "license_report.json").write_text(json.dumps({"passed": True, "counts": {"allowed": 3}}))
    (pack / "export_report.json").write_text(json.dumps({"model": {"version": version}}))
    (pack / "container").mkdir()
    (pack / "container" / "Dockerfile").write_text("FROM nvcr.io/nvidia/tritonserver:24.10-py3\n")
    if signed:
        describe = {"model": {"task": TASK, "name": MODEL, "version": version}, "inputs_digest": version}
        sign_pack(pack, signer or local_signer(key_dir), describe, signed_at=signed_at)
        published = publish_pack(store, prefix, pack)
        pack_prefix, files, manifest = published.prefix, published.files, published.manifest
    else:  # files and a manifest listing them, nothing signed
        hashes = {
            p.relative_to(pack).as_posix(): _sha(p.read_bytes()) for p in pack.rglob("*") if p.is_file()
        }
        pack_prefix = pack_folder(prefix, hashes)
        files = {
            rel: _put(store, f"{pack_prefix}/{rel}", (pack / rel).read_bytes()) for rel in sorted(hashes)
        }
        manifest = _put(
            store, f"{pack_prefix}/pack_manifest.json", json.dumps({"files": hashes}, sort_keys=True).encode()
        )
    onnx = files["model.onnx"]
    candidate = CandidateRef(
        bundle_sha256=_sha(version.encode()),
        prefix=f"candidates/{version}",
        files={"model.pt2": onnx},
        contract=c,
        lineage=LINEAGE,
        parameter_count=1000,
        received_at="2025-01-01T00:00:00+00:00",
        source="test",
    )
    engine = EngineRef(
        device=device, precision=precision, runtime="onnxruntime", candidate=candidate, engine=onnx
    )
    public_key = files.get("cosign.pub") or _put(store, f"{pack_prefix}/unsigned.pub", b"")
    pack_ref = PackRef(
        engine=engine,
        prefix=pack_prefix,
        manifest=manifest,
        files=files,
        container_tag=f"adas-detector:{version}-abcdef0",
        public_key=public_key,
    )
    verdict = GateVerdict(
        passed=gate_green,
        verdict="green" if gate_green else "red",
        gates=[],
        failing_slices=[],
        rationale="all gates pass" if gate_green else "weighted mAP below production + 1.5 points",
        baseline_available=True,
        gates_version=1,
        gates_sha256="0" * 64,
    )
    eval_prefix = f"{prefix}/evaluation"
    gate = GateRef(
        device=device,
        precision=precision,
        version=version,
        production_version="0.9.0",
        passed=gate_green,
        verdict=verdict,
        files={
            "gate_verdict.json": _put(
                store, f"{eval_prefix}/gate_verdict.json", verdict.model_dump_json().encode()
            )
        },
    )
    sim = SimVerdictRef(
        device=device,
        precision=precision,
        version=version,
        production_version="0.9.0",
        green=sim_green,
        rationale="no collisions" if sim_green else "2 collisions in cut-in scenarios",
        checks=[],
        files={
            "sim_verdict.json": _put(store, f"{prefix}/sim/sim_verdict.json", b'{"verdict": "x"}'),
            "sim_verdict.md": _put(store, f"{prefix}/sim/sim_verdict.md", b"# sim verdict\n"),
        },
    )
    slices = {
        "weather=clear": SliceStat(AP=ap, images=40, critical=True),
        "weather=fog": SliceStat(AP=ap - 0.2, images=35, critical=True),
    }
    snap = MetricsSnapshot(version=version, AP=ap, per_class_AP={"car": ap, "truck": ap - 0.1}, slices=slices)
    prod = MetricsSnapshot(
        version="0.9.0",
        AP=ap - 0.05,
        per_class_AP={"car": ap - 0.05},
        slices={
            "weather=clear": SliceStat(AP=ap - 0.05, images=40, critical=True),
            "weather=fog": SliceStat(AP=ap - 0.1, images=35, critical=True),
        },
    )
    report = EvalReportRef(
        device=device,
        precision=precision,
        engine=engine,
        production_engine=None,
        dataset_tag="sim-test",
        split="golden_test",
        frames=120,
        profile="standard",
        prefix=eval_prefix,
        files={
            "evaluation_summary.md": _put(store, f"{eval_prefix}/evaluation_summary.md", b"# evaluation\n"),
            "eval_report.json": _put(store, f"{eval_prefix}/eval_report.json", _eval_report(store)),
        },
        snapshot=snap,
        production_snapshot=prod,
        latency=Latency(p50_ms=3.0, p95_ms=4.0, source="ort", budget_p95_ms=25.0),
    )
    return Built(pack_ref, gate, sim, report, triton_dir)


def _eval_report(store: LocalArtifactStore) -> bytes:
    """What an entry's eval_report.json says of its data: the dataset and its file index."""
    dataset = replay_dataset(store)
    assert dataset.file_index is not None
    index = dataset.file_index.model_dump()
    return json.dumps({"dataset": {"tag": dataset.tag, "split": "golden_test", "file_index": index}}).encode()


def triton_ref_for(store: LocalArtifactStore, version: str, triton_dir: Path) -> TritonRepositoryRef:
    """Store a Triton repository as the packaging stage does (for adopted baselines)."""
    prefix = f"{Cell(CPU['device'], CPU['precision']).pack_prefix(TASK, version)}/triton"
    files = {
        p.relative_to(triton_dir).as_posix(): _put(
            store, f"{prefix}/{p.relative_to(triton_dir).as_posix()}", p.read_bytes()
        )
        for p in sorted(triton_dir.rglob("*"))
        if p.is_file()
    }
    ic = files.get("inference_config.json") or _put(store, f"{prefix}/inference_config.json", b"{}")
    files["inference_config.json"] = ic
    return TritonRepositoryRef(
        prefix=prefix,
        serving="python-onnxruntime",
        ensemble=MODEL,
        files=files,
        inference_config=ic,
        digest="0" * 64,
    )
