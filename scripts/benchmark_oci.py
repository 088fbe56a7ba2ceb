"""Benchmark OCI publication (#14): push and pull time per cell, and the bytes a second version
of the model pushes when only its engine changed (shared layers are not pushed again).

    .venv/bin/python scripts/benchmark_oci.py [--fp32-mb 1.6] [--int8-mb 0.45] [--repeats 3] [--out /tmp/oci_bench.md]

Against a local ``docker-registry`` on a free port (started and stopped here, storage in a temp
folder). Packs are built by ``tests/packaging/oci_packs.py:make_pack`` (the real pack layout, real
signatures and pack manifest, engine bytes random at the given size, the program half of it;
defaults: the dense demo's FP32 ``model.onnx``, 1.6 MB, and an INT8 engine about a quarter of it). Each push
goes to a fresh repository (nothing shared), each pull is by digest with every layer, the
attached signature and the signed pack verified. The second version (1.4.1) changes the engine
only (and the version strings in the contract and report); the same-run ratio is its bytes
pushed over the first push's.
"""

from __future__ import annotations

import argparse
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

from adas.packaging.keys import init_local_keys
from adas.packaging.local_oci_registry import LocalOciRegistry
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_deploy import pull_verified
from adas.packaging.oci_publication import publish_cell
from adas.packaging.refs import PublishedPackRef
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.storage import LocalArtifactStore
from tests.packaging.oci_packs import make_pack
from tests.registry.packs import local_signer


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
        signer = local_signer(keys)
        client = RegistryClient(reg.url)
        for precision, mb in (("fp32", args.fp32_mb), ("int8", args.int8_mb)):
            size = int(mb * 1_000_000)
            engine = random.Random(f"engine-{precision}-1").randbytes(size)
            program = random.Random(f"pt2-{precision}").randbytes(size // 2)  # unchanged in 1.4.1
            pack = make_pack(
                store, tmp / "build", keys, "1.4.0", precision=precision, engine=engine, program=program
            )
            push_s, pull_s = [], []
            first: PublishedPackRef | None = None
            for i in range(args.repeats):
                ns = f"bench{i}-{precision}"  # a fresh repository: every blob is pushed
                t0 = time.perf_counter()
                first = publish_cell(store, pack, client, signer=signer, trust=trust, namespace=ns)
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
            v2 = make_pack(
                store,
                tmp / "build",
                keys,
                "1.4.1",
                precision=precision,
                engine=random.Random(f"engine-{precision}-2").randbytes(size),
                program=program,
            )
            nxt = publish_cell(
                store,
                v2,
                client,
                signer=signer,
                trust=trust,
                namespace=f"bench{args.repeats - 1}-{precision}",
            )
            second.append((precision, first.bytes_pushed, nxt))
    lines = [
        "## OCI publish (CPU): push, pull, second version",
        "",
        f"`scripts/benchmark_oci.py --fp32-mb {args.fp32_mb} --int8-mb {args.int8_mb} --repeats {args.repeats}`: "
        "local `docker-registry` (Distribution 2.8) on 127.0.0.1, synthetic packs in the real layout "
        "(engine bytes random at the dense demo's FP32 `model.onnx` size, INT8 about a quarter), real "
        "signatures; push = layers + config + manifest + `.sig`/`.att`/`.sbom` attachments to an empty repository, "
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
        "Where the second version's bytes go: the new engine (its layer; the Triton repository's copy of it "
        "is not archived twice, the Triton layer maps it to the engine layer's file), and the contract, "
        "reports and signatures layers, which change with the version string. The program, the Triton "
        "layer and the SBOM have identical bytes and are skipped (HEAD answered).",
    ]
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
