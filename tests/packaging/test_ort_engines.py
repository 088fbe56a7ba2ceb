"""ONNX Runtime engines: FP32 build, INT8 Q/DQ build, calibration cache, per-layer fallback, QAT flag."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from adas.intake.contract import Contract
from adas.packaging.config import Int8Config, default_packaging_config
from adas.packaging.ort_engines import OrtEngine, build_fp32_engine
from adas.packaging.ort_int8 import Int8Build, build_int8_engine, shard_sha256
from adas.packaging.qdq_graph import node_precisions, read_calibration_cache


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Training frames of the generated tiny dataset (one generation per test session)."""
    from adas.detector.data import CocoFrames

    root = tmp_path_factory.getbasetemp() / "packaging_tiny_ds"
    if not (root / "golden_train.json").exists():
        from adas.datasets.config import load_datagen_config
        from adas.datasets.generator import generate_dataset

        generate_dataset(root, load_datagen_config(), size="tiny", workers=1)
    return CocoFrames.load(root / "golden_train.json").frames


@pytest.fixture(scope="module")
def int8_config() -> Int8Config:
    return default_packaging_config().int8


@pytest.fixture(scope="module")
def int8(
    onnx_path: Path,
    frames: np.ndarray,
    contract: Contract,
    int8_config: Int8Config,
    tmp_path_factory: pytest.TempPathFactory,
) -> Int8Build:
    return build_int8_engine(onnx_path, frames, contract, tmp_path_factory.mktemp("int8"), int8_config)


def test_fp32_engine_runs_keyed_by_contract_names(
    onnx_path: Path, contract: Contract, tmp_path: Path
) -> None:
    build = build_fp32_engine(onnx_path, tmp_path / "fp32.onnx")
    assert build.path.is_file() and build.mode == "optimized"
    assert build.max_abs_diff_vs_source < 1e-5
    assert build.node_count < len(onnx.load(str(onnx_path)).graph.node)  # fusions happened
    engine = OrtEngine(build.path, contract=contract)
    assert engine.input_name == "images"
    assert engine.providers == ["CPUExecutionProvider"]
    for batch in (1, 3):
        out = engine.run(np.zeros((batch, *contract.input.shape[1:]), np.float32))
        assert list(out) == [o.name for o in contract.outputs]
        for spec in contract.outputs:
            assert out[spec.name].shape == (batch, *spec.shape[1:])
    plain = build_fp32_engine(onnx_path, tmp_path / "plain.onnx", mode="plain")
    assert plain.max_abs_diff_vs_source == 0.0


def test_engine_refuses_a_graph_that_does_not_match_the_contract(onnx_path: Path, contract: Contract) -> None:
    other = contract.model_copy(update={"input": contract.input.model_copy(update={"name": "pixels"})})
    with pytest.raises(ValueError, match="do not match the contract"):
        OrtEngine(onnx_path, contract=other)


def test_int8_graph_has_qdq_and_a_calibration_cache(int8: Int8Build, frames: np.ndarray) -> None:
    model = onnx.load(str(int8.path))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert int8.path.name == "model.onnx" and int8.calibration_cache.name == "calibration.cache"
    assert int8.quantized_nodes > 10 and int8.qdq_nodes > 20
    header, table = read_calibration_cache(int8.calibration_cache)
    assert header["method"] == "MinMax"
    assert int(header["frames"]) == len(frames) == int8.calibration_frames
    assert header["shard_sha256"] == shard_sha256(frames) == int8.shard_sha256
    # Every activation the graph quantizes has its calibrated range in the cache.
    quantized_activations = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized_activations and quantized_activations <= set(table)
    assert all(lo <= hi for lo, hi in table.values())
    assert table["images"][0] < 0 < table["images"][1]  # the normalized input spans both signs


def test_output_producers_can_stay_fp32(
    onnx_path: Path, frames: np.ndarray, contract: Contract, int8_config: Int8Config, tmp_path: Path
) -> None:
    cfg = int8_config.model_copy(
        update={
            "keep_output_producers_fp32": True,
            "fallback": int8_config.fallback.model_copy(update={"enabled": False}),
        }
    )
    build = build_int8_engine(onnx_path, frames[:8], contract, tmp_path, cfg)
    model = onnx.load(str(build.path))
    precisions = node_precisions(model)
    producers = {o: n.name for n in model.graph.node for o in n.output}
    heads = {producers[o.name] for o in contract.outputs}  # the head convs themselves, no DQ after them
    assert heads == set(build.excluded_nodes)
    assert all(precisions[h] == "fp32" and "graph output" in build.excluded_nodes[h] for h in heads)
    assert any(p == "int8" for p in precisions.values())


def test_fallback_bound_is_honoured(
    int8: Int8Build,
    onnx_path: Path,
    frames: np.ndarray,
    contract: Contract,
    int8_config: Int8Config,
    tmp_path: Path,
) -> None:
    errors = int8.node_errors
    assert errors and all(e > 0 for e in errors.values())
    bound = float(np.median(list(errors.values())))
    cfg = int8_config.model_copy(
        update={"fallback": int8_config.fallback.model_copy(update={"max_node_error": bound})}
    )
    build = build_int8_engine(onnx_path, frames, contract, tmp_path, cfg)
    fell_back = {n for n, why in build.excluded_nodes.items() if why.startswith("fallback")}
    assert fell_back == {n for n, e in errors.items() if e > bound}
    precisions = node_precisions(onnx.load(str(build.path)))
    assert all(precisions[n] == "fp32" for n in fell_back)
    assert any(p == "int8" for p in precisions.values())  # the rest is still quantized
    assert build.quantized_nodes < int8.quantized_nodes
    header, _ = read_calibration_cache(build.calibration_cache)
    assert int(header["excluded_nodes"]) == len(build.excluded_nodes)


def test_always_fp32_patterns(
    onnx_path: Path, frames: np.ndarray, contract: Contract, int8_config: Int8Config, tmp_path: Path
) -> None:
    cfg = int8_config.model_copy(
        update={
            "always_fp32_patterns": ["^/stem/"],
            "fallback": int8_config.fallback.model_copy(update={"enabled": False}),
        }
    )
    build = build_int8_engine(onnx_path, frames[:8], contract, tmp_path, cfg)
    assert "/stem/conv/Conv" in build.excluded_nodes and "pattern" in build.excluded_nodes["/stem/conv/Conv"]
    assert node_precisions(onnx.load(str(build.path)))["/stem/conv/Conv"] == "fp32"
    assert build.node_errors == {}


def test_tensorrt_flavour_is_symmetric_without_int32_bias(
    onnx_path: Path, frames: np.ndarray, contract: Contract, int8_config: Int8Config, tmp_path: Path
) -> None:
    from adas.packaging.operators import coverage_report, require_supported_ops

    cfg = int8_config.model_copy(
        update={"fallback": int8_config.fallback.model_copy(update={"enabled": False})}
    )
    build = build_int8_engine(onnx_path, frames[:8], contract, tmp_path, cfg, runtime="tensorrt")
    assert build.activation_type == "int8" and build.activation_symmetric
    require_supported_ops(coverage_report(build.path, "tensorrt"))
    # The CPU flavour is asymmetric uint8 with int32 biases: TensorRT's parser would refuse it.
    cpu = build_int8_engine(onnx_path, frames[:8], contract, tmp_path / "cpu", cfg, runtime="onnxruntime")
    assert not coverage_report(cpu.path, "tensorrt").supported


def test_quantization_aware_bundle_uses_its_own_qdq_graph(
    int8: Int8Build,
    onnx_path: Path,
    frames: np.ndarray,
    contract: Contract,
    int8_config: Int8Config,
    tmp_path: Path,
) -> None:
    from adas.storage import sha256_file

    qat = contract.model_copy(update={"quantization_aware": True})
    build = build_int8_engine(int8.path, frames, qat, tmp_path / "qat", int8_config)
    assert build.quantization_aware and build.calibration_method == "qat"
    assert build.sha256 == sha256_file(int8.path)[0]  # used as is, no re-quantization
    assert any("QAT" in n for n in build.notes)
    header, table = read_calibration_cache(build.calibration_cache)
    assert "quantization-aware" in header["method"] and table
    with pytest.raises(ValueError, match="quantization_aware: true but the exported graph has no"):
        build_int8_engine(onnx_path, frames, qat, tmp_path / "float", int8_config)


def test_calibration_frames_are_validated(
    onnx_path: Path, contract: Contract, int8_config: Int8Config, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        build_int8_engine(onnx_path, np.zeros((2, 96, 384, 3), np.float32), contract, tmp_path, int8_config)
