"""Benchmark OCI publication (#14): push and pull time per cell, and the bytes a second version
of the model pushes when only its engine changed (shared layers are not pushed again).

    .venv/bin/python scripts/benchmark_oci.py [--fp32-mb 1.6] [--int8-mb 0.45] [--repeats 3] [--out /tmp/oci_bench.md]

Against a local ``docker-registry`` on a free port (started and stopped here, storage in a temp
folder). Packs are built the way ``tests/packaging/oci_packs.py`` builds them (the real pack
layout, real signatures and pack manifest, engine bytes random at the given size; defaults: the
dense demo's FP32 ``model.onnx``, 1.6 MB, and an INT8 engine about a quarter of it). Each push
goes to a fresh repository (nothing shared), each pull is by digest with every layer, the
attached signature and the signed pack verified. The second version (1.4.1) changes the engine
only (and the version strings in the contract and report); the same-run ratio is its bytes
pushed over the first push's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adas.cell import Cell
from adas.intake.refs import CandidateRef
from adas.packaging.keys import init_local_keys
from adas.packaging.local_oci_registry import LocalOciRegistry
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_deploy import pull_verified
from adas.packaging.oci_publication import publish_cell
from adas.packaging.publish import publish_pack
from adas.packaging.refs import EngineRef, PackRef, PublishedPackRef
from adas.packaging.signing import PUBLIC_KEY_FILE, sign_pack
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.storage import LocalArtifactStore
from tests.registry.packs import CPU, LINEAGE, MODEL, TASK, contract, local_signer


def build_pack(
    store: LocalArtifactStore, work: Path, keys: Path, version: str, precision: str, engine: bytes
) -> PackRef:
    """A signed pack in the layout ``assemble_pack`` writes (as tests/packaging/oci_packs.py)."""
    c = contract(version)
    pack = work / f"pack-{version}-{precision}"
    shutil.rmtree(pack, ignore_errors=True)
    program = random.Random(f"pt2-{precision}").randbytes(len(engine) // 2)  # unchanged between versions
    files: dict[str, bytes] = {
        "model.onnx": engine,
        "model.pt2": program,
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
        "container/Dockerfile": b"FROM nvcr.io/nvidia/tritonserver:25.03-py3\n",
    }
    for rel, data in files.items():
        (pack / rel).parent.mkdir(parents=True, exist_ok=True)
        (pack / rel).write_bytes(data)
    sign_pack(pack, local_signer(keys), {"model": {"task": TASK, "name": MODEL, "version": version}})
    published = publish_pack(store, Cell(CPU["device"], precision).pack_prefix(TASK, version), pack)
    candidate = CandidateRef(
        bundle_sha256="0" * 64,
        prefix=f"candidates/{version}",
        files={"model.pt2": published.files["model.pt2"]},
        contract=c,
        lineage=LINEAGE,
        parameter_count=1_234_567,
        received_at="2026-01-01T00:00:00+00:00",
        source="benchmark",
    )
    return PackRef(
        engine=EngineRef(
            device=CPU["device"],
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


def machine() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    model = next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
        platform.processor(),
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores; load average {load}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fp32-mb", type=float, default=1.6)
    ap.add_argument("--int8-mb", type=float, default=0.45)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/oci_bench.md"))
    args = ap.parse_args()
    rows, second = [], []
    with (
        tempfile.TemporaryDirectory(prefix="bench-oci-") as tmp_s,
        LocalOciRegistry(Path(tmp_s) / "oci") as reg,
    ):
        tmp = Path(tmp_s)
        store = LocalArtifactStore(root=str(tmp / "artifacts"))
        keys = tmp / "keys"
        init_local_keys(keys, keys / TRUST_FILE)
        trust = load_trust_file(keys / TRUST_FILE)
        client = RegistryClient(reg.url)
        for precision, mb in (("fp32", args.fp32_mb), ("int8", args.int8_mb)):
            size = int(mb * 1_000_000)
            engine = random.Random(f"engine-{precision}-1").randbytes(size)
            pack = build_pack(store, tmp / "build", keys, "1.4.0", precision, engine)
            push_s, pull_s = [], []
            first: PublishedPackRef | None = None
            for i in range(args.repeats):
                ns = f"bench{i}-{precision}"  # a fresh repository: every blob is pushed
                t0 = time.perf_counter()
                first = publish_cell(store, pack, client, namespace=ns)
                push_s.append(time.perf_counter() - t0)
                dest = tmp / f"pull-{precision}-{i}"
                t0 = time.perf_counter()
                pull_verified(client, first.reference, trust, dest)
                pull_s.append(time.perf_counter() - t0)
                shutil.rmtree(dest)
            assert first is not None
            rows.append(
                (precision, first.bytes_pushed, statistics.median(push_s), statistics.median(pull_s), first)
            )
            # The second version: only the engine changed, pushed where the first one is.
            v2 = build_pack(
                store,
                tmp / "build",
                keys,
                "1.4.1",
                precision,
                random.Random(f"engine-{precision}-2").randbytes(size),
            )
            nxt = publish_cell(store, v2, client, namespace=f"bench{args.repeats - 1}-{precision}")
            second.append((precision, first.bytes_pushed, nxt))
    lines = [
        "## OCI publish (CPU): push, pull, second version",
        "",
        f"`scripts/benchmark_oci.py --fp32-mb {args.fp32_mb} --int8-mb {args.int8_mb} --repeats {args.repeats}`: "
        "local `docker-registry` (Distribution 2.8) on 127.0.0.1, synthetic packs in the real layout "
        "(engine bytes random at the dense demo's FP32 `model.onnx` size, INT8 about a quarter), real "
        "signatures; push = layers + config + manifest + `.sig`/`.sbom` attachments to an empty repository, "
        "pull = by digest with every layer, the signature and the signed pack verified. Median of "
        f"{args.repeats}. Machine: {machine()}.",
        "",
        "| cell | bytes pushed | push (s) | pull (s) | push MB/s |",
        "|---|---|---|---|---|",
        *(f"| x86-cpu/{p} | {b:,} | {ps:.3f} | {pl:.3f} | {b / ps / 1e6:.1f} |" for p, b, ps, pl, _ in rows),
        "",
        "Second version (1.4.1: new engine, same program, contract and report differ by the version string):",
        "",
        "| cell | first push bytes | second version bytes pushed | ratio | layers sent / skipped |",
        "|---|---|---|---|---|",
        *(
            f"| x86-cpu/{p} | {b1:,} | {r.bytes_pushed:,} | {r.bytes_pushed / b1:.2f} | "
            f"{', '.join(x.group for x in r.layers if x.uploaded)} (+ModelPack config blob) / "
            f"{', '.join(x.group for x in r.layers if not x.uploaded)} |"
            for p, b1, r in second
        ),
        "",
        "Where the second version's bytes go: the engine layer groups `model.onnx` with `model.pt2` (the "
        "unchanged program is re-sent with it) and the Triton layer carries the engine's copy; the "
        "contract, reports and signatures layers change with the version string. Only layers whose bytes "
        "are identical are skipped (HEAD answered): here the SBOM. A layout with the program in a layer of "
        "its own would skip it (about a third of these packs).",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
