"""A signed model pack with the real layout, published write-once into a local store, in
milliseconds: engine bytes are random (the OCI code moves bytes, it does not run them), the
signatures and the pack manifest are real (``sign_pack`` / ``publish_pack``)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from adas.cell import Cell
from adas.intake.refs import CandidateRef
from adas.packaging.publish import publish_pack
from adas.packaging.refs import EngineRef, PackRef
from adas.packaging.signing import PUBLIC_KEY_FILE, sign_pack
from adas.storage import LocalArtifactStore
from tests.registry.packs import CPU, LINEAGE, MODEL, TASK, contract, local_signer

ENGINE_BYTES = 200_000  # several 64 KiB chunks per big layer in the chunked-upload tests


def _random(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def make_pack(
    store: LocalArtifactStore,
    workdir: Path,
    key_dir: Path,
    version: str = "1.4.0",
    seed: int = 0,
    *,
    precision: str = CPU["precision"],
    engine: bytes | None = None,
    program: bytes | None = None,
) -> PackRef:
    """Files as ``assemble_pack`` lays them out (engine, bundle program, Triton repository with
    its own engine copy, inference contract, reports, SBOM, container context), signed by the
    key of ``key_dir`` (enrolled in ``key_dir``'s trust file) and published under its cell.
    ``engine`` and ``program`` default to random bytes drawn from ``seed``."""
    c = contract(version)
    pack = workdir / f"pack-{version}-{seed}-{precision}"
    shutil.rmtree(pack, ignore_errors=True)
    engine = _random(seed, ENGINE_BYTES) if engine is None else engine
    files: dict[str, bytes] = {
        "model.onnx": engine,
        "model.pt2": _random(seed + 1, ENGINE_BYTES // 2) if program is None else program,
        f"triton/{MODEL}/config.pbtxt": f'name: "{MODEL}"\nplatform: "ensemble"\n'.encode(),
        f"triton/{MODEL}_engine/1/model.onnx": engine,
        f"triton/{MODEL}_engine/config.pbtxt": b'backend: "onnxruntime"\n',
        f"triton/{MODEL}_preprocess/1/model.py": b"def preprocess(x):\n    return x\n",
        "inference_config.json": json.dumps(c.model_dump(mode="json"), sort_keys=True).encode(),
        "requirements.lock": b"onnxruntime==1.20.1\n",
        "sbom.cdx.json": json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5"}).encode(),
        "export_report.json": json.dumps({"model": {"version": version}}).encode(),
        "license_report.json": b'{"passed": true}',
        "vulnerability_scan.json": b'{"status": "not_scanned"}',
        "container/Dockerfile": b"FROM nvcr.io/nvidia/tritonserver:24.10-py3\n",
    }
    for rel, data in files.items():
        (pack / rel).parent.mkdir(parents=True, exist_ok=True)
        (pack / rel).write_bytes(data)
    device = CPU["device"]
    body = sign_pack(
        pack,
        local_signer(key_dir),
        {"model": {"task": TASK, "name": MODEL, "version": version}, "inputs_digest": f"{version}-{seed}"},
    )
    assert set(files) <= set(body["files"])
    published = publish_pack(store, Cell(device, precision).pack_prefix(TASK, version), pack)
    candidate = CandidateRef(
        bundle_sha256="0" * 64,
        prefix=f"candidates/{version}",
        files={"model.pt2": published.files["model.pt2"]},
        contract=c,
        lineage=LINEAGE,
        parameter_count=1_234_567,
        received_at="2026-01-01T00:00:00+00:00",
        source="test",
    )
    return PackRef(
        engine=EngineRef(
            device=device,
            precision=precision,
            runtime=CPU["runtime"],
            candidate=candidate,
            engine=published.files["model.onnx"],
        ),
        prefix=published.prefix,
        manifest=published.manifest,
        files=published.files,
        container_tag=f"adas-detector:{version}-{LINEAGE.git_sha}",
        public_key=published.files[PUBLIC_KEY_FILE],
    )


def stored_pack_files(store: LocalArtifactStore, pack: PackRef) -> dict[str, bytes]:
    """Every file of the published pack (its manifest included), as the store holds it."""
    out = {rel: store.get_bytes(f.key, expected_sha256=f.sha256) for rel, f in pack.files.items()}
    out["pack_manifest.json"] = store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256)
    return out


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
