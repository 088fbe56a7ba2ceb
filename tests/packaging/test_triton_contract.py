"""The contract smoke test against a REAL Triton Inference Server (2.51, CPU, python backend).

The server comes from ``.venv-triton`` (``scripts/setup_triton_env.sh``, run by ``make setup``);
these tests skip only where that virtualenv does not exist at all.
"""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from adas.detector.bundle import build_contract
from adas.detector.model import build_model
from adas.detector.postprocess import Detections, decode
from adas.detector.preprocess import normalize
from adas.intake.contract import Contract, Normalization
from adas.packaging.contract_smoke import PROTOCOLS, run_contract_smoke
from adas.packaging.export import export_onnx
from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.triton_server import TritonServer, default_triton_venv

VENV = default_triton_venv()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not VENV.exists(),
        reason=f"{VENV} is missing: run `bash scripts/setup_triton_env.sh` (`make setup` does)",
    ),
]

NORM = Normalization(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
CPU = {"device": "x86-cpu", "precision": "fp32", "runtime": "onnxruntime", "serving": "python-onnxruntime"}


def _contract(normalization: Normalization = NORM) -> Contract:
    return build_contract(
        version="0.1.0",
        model_name="centernet-smoke",
        task="vehicle-detection",
        normalization=normalization,
        score_threshold=0.3,
        max_detections=32,
    )


@pytest.fixture(scope="module")
def contract() -> Contract:
    return _contract()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory, contract: Contract) -> Path:
    """An untrained narrow detector; its heatmap head is amplified so that the untrained (tiny)
    features give a handful of well-separated detections per frame instead of none."""
    torch.manual_seed(0)
    model = build_model(width=8)
    with torch.no_grad():
        model.heatmap.weight.normal_(std=50.0)
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    export_onnx(model.fuse(), contract, path)
    return path


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Grey road with a few coloured rectangles ("vehicles") per frame."""
    rng = np.random.default_rng(0)
    out = np.full((6, 96, 384, 3), 90, np.uint8)
    for f in out:
        for _ in range(5):
            x, y = int(rng.integers(0, 360)), int(rng.integers(0, 84))
            f[y : y + 10, x : x + 24] = rng.integers(0, 256, 3)
    return out


def _local_detections(onnx_file: Path, contract: Contract, frames: np.ndarray) -> list[Detections]:
    """Our own engine (ONNX Runtime on the same file) + ``decode``: what serving must reproduce."""
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx_file), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in contract.outputs]
    outs = sess.run(names, {contract.input.name: normalize(frames, contract.input.normalization)})
    return decode(dict(zip(names, outs, strict=True)), contract.postprocess, [c.id for c in contract.classes])


@pytest.fixture(scope="module")
def expected(onnx_file: Path, contract: Contract, frames: np.ndarray) -> list[Detections]:
    dets = _local_detections(onnx_file, contract, frames)
    assert all(len(d) > 0 for d in dets) and sum(len(d) for d in dets) >= 20
    return dets


def test_served_ensemble_meets_the_contract(
    tmp_path: Path, contract: Contract, onnx_file: Path, frames: np.ndarray, expected: list[Detections]
) -> None:
    # max_batch_size 4 < 6 frames: the smoke test must split its requests.
    repo = write_triton_repository(tmp_path / "repo", contract, onnx_file, max_batch_size=4, **CPU)
    report = run_contract_smoke(repo, contract, frames, expected, tolerance=1e-4, log_path=tmp_path / "s.log")
    assert report.passed, report.to_markdown()
    names = [c.name for c in report.checks]
    for proto in PROTOCOLS:
        for what in (
            "server metadata",
            "models ready",
            "ensemble metadata matches inference_config",
            "engine metadata matches the contract",
            "output value ranges",
            "detections equal the local engine's",
        ):
            assert f"{proto}: {what}" in names
    assert "preprocess normalization matches the contract" in names
    assert "http and grpc answers identical" in names
    total = sum(len(d) for d in expected)
    assert (
        f"{total} detections on 6 frames" in report.check("http: detections equal the local engine's").detail
    )
    assert report.server_version == "2.51.0"
    assert report.startup_seconds is not None and 0 < report.startup_seconds < 60
    assert set(report.latency_ms_p50) == set(PROTOCOLS) and all(v > 0 for v in report.latency_ms_p50.values())
    assert "PASS" in report.to_markdown()
    print(
        f"\ntriton startup {report.startup_seconds:.2f} s, p50 "
        + ", ".join(f"{p} {ms:.2f} ms" for p, ms in report.latency_ms_p50.items())
    )


def test_normalization_mismatch_is_named(
    tmp_path: Path, contract: Contract, onnx_file: Path, frames: np.ndarray, expected: list[Detections]
) -> None:
    """A repository whose preprocess normalizes differently from the contract fails the smoke
    test, and the report says what disagrees."""
    skewed = _contract(Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.229, 0.224, 0.225)))
    repo = write_triton_repository(tmp_path / "repo", skewed, onnx_file, **CPU)
    report = run_contract_smoke(
        repo, contract, frames, expected, tolerance=1e-4, latency_requests=1, log_path=tmp_path / "s.log"
    )
    assert not report.passed
    failed = {c.name: c.detail for c in report.failures}
    assert "normalization mean" in failed["preprocess normalization matches the contract"]
    assert "[0.5, 0.5, 0.5]" in failed["preprocess normalization matches the contract"]
    assert "normalization" in failed["inference_config.json matches the contract"]
    # The served detections drift too: the contract check is not only a config diff.
    assert "http: detections equal the local engine's" in failed
    # Everything that does not depend on the normalization still passes.
    assert report.check("http: engine metadata matches the contract").passed
    assert report.check("postprocess parameters match the contract").passed
    assert "FAIL" in report.to_markdown()


def test_unloadable_repository_fails_with_the_server_log(
    tmp_path: Path, contract: Contract, onnx_file: Path, frames: np.ndarray, expected: list[Detections]
) -> None:
    repo = write_triton_repository(tmp_path / "repo", contract, onnx_file, **CPU)
    (repo.root / repo.engine / "1" / "model.onnx").unlink()
    report = run_contract_smoke(repo, contract, frames, expected, log_path=tmp_path / "s.log")
    assert not report.passed
    start = report.check("server start")
    assert not start.passed
    assert "before becoming ready" in start.detail and repo.engine in start.detail


def test_server_lifecycle(tmp_path: Path, contract: Contract, onnx_file: Path) -> None:
    repo = write_triton_repository(tmp_path / "repo", contract, onnx_file, **CPU)
    server = TritonServer(repo.root, log_path=tmp_path / "server.log")
    assert len({server.http_port, server.grpc_port, server.metrics_port}) == 3
    with server:
        assert server.running()
        with urllib.request.urlopen(f"http://{server.http_url}/v2/health/ready", timeout=5) as resp:
            assert resp.status == 200
        # The metrics listener comes up asynchronously, shortly after HTTP reports ready.
        deadline = time.time() + 15
        while True:
            try:
                with urllib.request.urlopen(server.metrics_url, timeout=5) as resp:
                    metrics = resp.read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.25)
        assert b"nv_inference_request_success" in metrics
        pid = server.pid
        assert pid is not None
    assert not server.running()
    # The server and the python-backend stubs it forked (same process group) are all gone.
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # signal 0: existence probe
    assert "successfully loaded" in (tmp_path / "server.log").read_text()


def test_a_letterboxed_dense_detector_is_served_in_source_pixels(tmp_path: Path, frames: np.ndarray) -> None:
    """Another output kind on the real server: a dense (YOLO-style, BFN) head on 160x512
    letterboxed input; the ensemble takes the 96x384 frames and answers in their pixels."""
    from adas.detector.decoders import decode as decode_any
    from adas.detector.dense_bundle import build_dense_contract, export_dense_onnx
    from adas.detector.dense_model import build_dense_model
    from adas.detector.preprocess import preprocess

    torch.manual_seed(0)
    model = build_dense_model(num_classes=3, width=8).eval()
    with torch.no_grad():
        model.head4.cls_out.bias.fill_(0.0)
        model.head8.cls_out.bias.fill_(0.0)
    contract = build_dense_contract(
        version="2.0.0", model_name="dense-smoke", task="vehicle-detection", normalization=NORM,
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")], num_candidates=model.config.num_candidates,
        score_threshold=0.3, max_detections=32,
    )  # fmt: skip
    onnx_path = tmp_path / "dense.onnx"
    onnx_path.write_bytes(export_dense_onnx(model))
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x, geometry = preprocess(frames, contract.input)
    expected = decode_any({"output0": sess.run(None, {"images": x})[0]}, contract, geometry=geometry)
    assert sum(len(d) for d in expected) >= 20
    repo = write_triton_repository(tmp_path / "repo", contract, onnx_path, max_batch_size=4, **CPU)
    report = run_contract_smoke(repo, contract, frames, expected, tolerance=1e-4, box_tolerance_px=1e-3)
    assert report.passed, report.to_markdown()
    assert "detections on 6 frames" in report.check("grpc: detections equal the local engine's").detail
