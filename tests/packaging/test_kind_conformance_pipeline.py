"""One model, every kind, through the platform: each kind's ONNX export of the same dense weights is
taken in by intake (sandboxed smoke and probe checks), built into the FP32 engine and held to the
numerical-equivalence check, and served by the real Triton ensemble with the same detections as the
in-process decoder. (The AP leg is ``tests/detector/test_kind_conformance.py``.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adas.detector.decoders import decode
from adas.detector.dense_bundle import build_dense_contract
from adas.detector.dense_model import DenseDetector, build_dense_model
from adas.detector.preprocess import preprocess
from adas.intake.candidates import screen_bundle
from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Lineage, Normalization
from adas.packaging.config import default_packaging_config
from adas.packaging.contract_smoke import run_contract_smoke
from adas.packaging.equivalence import check_equivalence
from adas.packaging.ort_engines import OrtEngine, build_fp32_engine
from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.triton_server import default_triton_venv
from adas.storage import LocalArtifactStore
from tests.detector.kind_exports import EXPORTS, kind_contract
from tests.detector.kind_exports import export as export_onnx

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not default_triton_venv().exists(), reason="needs .venv-triton (make setup)"),
]
NORM = Normalization(scale=1 / 255, mean=(0.45, 0.45, 0.45), std=(0.2, 0.2, 0.2))
CPU = {"device": "x86-cpu", "precision": "fp32", "runtime": "onnxruntime", "serving": "python-onnxruntime"}


@pytest.fixture(scope="module")
def model() -> DenseDetector:
    torch.manual_seed(0)
    m = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():  # untrained features are tiny: amplify them into a spread of scores
        for head in (m.head4, m.head8):
            head.cls_out.weight.normal_(std=1000.0)
            head.cls_out.bias.fill_(-2.0)
    return m


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    rng = np.random.default_rng(0)
    out = np.full((6, 96, 384, 3), 90, np.uint8)
    for f in out:
        for _ in range(6):
            x, y = int(rng.integers(0, 350)), int(rng.integers(0, 80))
            f[y : y + 12, x : x + 30] = rng.integers(0, 256, 3)
    return out


# In CI: one of each shape of the served path (a batched dense head, an unbatched ragged engine, an
# engine that also takes the source size); the kinds decoded like one of those run nightly (each
# kind's decoding is checked in CI by tests/detector/test_kind_conformance.py).
IN_CI = {"dense_bfn", "ragged", "detections_source"}


@pytest.mark.parametrize(
    "kind", [k if k in IN_CI else pytest.param(k, marks=pytest.mark.nightly) for k in EXPORTS]
)
def test_each_kind_is_taken_in_packaged_and_served_alike(
    kind: str, model: DenseDetector, frames: np.ndarray, tmp_path: Path
) -> None:
    base = build_dense_contract(
        version="2.0.0", model_name="conformance", task="vehicle-detection", normalization=NORM,
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")], num_candidates=model.config.num_candidates,
        score_threshold=0.8, max_detections=100,
    )  # fmt: skip
    contract = kind_contract(base, kind)
    module, names = EXPORTS[kind](model, base.postprocess.nms_iou_threshold)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    source_size = contract.input.source_size is not None
    (bundle / contract.model_file).write_bytes(
        export_onnx(module, names, contract.input.height_width, source_size)
    )
    (bundle / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    lineage = Lineage(training_run_id="conformance", dataset_tag="synthetic", git_sha="0000000")
    (bundle / LINEAGE_FILE).write_text(lineage.model_dump_json())

    # Intake: the file checks, the sandboxed smoke forward and the probe-batch checks of the kind.
    store = LocalArtifactStore(tmp_path / "artifacts")
    screened = screen_bundle(store, bundle, tmp_path / "work")
    assert screened.bundle.contract.postprocess.kind == contract.postprocess.kind

    # Packaging: the FP32 engine of the given graph holds to the equivalence check (decoded boxes).
    given = bundle / contract.model_file
    engine = build_fp32_engine(given, tmp_path / "fp32" / "model.onnx", contract=contract).path
    report = check_equivalence(
        OrtEngine(given, contract=contract), OrtEngine(engine, contract=contract), contract,
        default_packaging_config(), "fp32", frames,
    )  # fmt: skip
    assert report.passed, report.failures

    # Serving: the real Triton ensemble answers with the in-process decoder's detections.
    x, geometry = preprocess(frames, contract.input)
    expected = decode(
        OrtEngine(engine, contract=contract).run(x, geometry.source_hw),
        contract,
        geometry=geometry,
        batch_size=len(x),
    )
    assert sum(len(d) for d in expected) > 0
    repo = write_triton_repository(tmp_path / "repo", contract, engine, max_batch_size=4, **CPU)
    smoke = run_contract_smoke(repo, contract, frames, expected, tolerance=1e-3, latency_requests=3)
    assert smoke.passed, smoke.to_markdown()
