"""TensorRT engines: clean failure off GPU nodes, FP16 graph conversion, real builds on GPU nodes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from adas.intake.contract import Contract
from adas.packaging.tensorrt_engines import (
    TensorRTUnavailable,
    build_tensorrt_engine,
    convert_to_fp16,
    tensorrt_available,
)

needs_tensorrt = pytest.mark.skipif(not tensorrt_available(), reason="needs tensorrt and a CUDA device")


def test_tensorrt_available_is_a_bool() -> None:
    assert isinstance(tensorrt_available(), bool)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_build_without_tensorrt_says_which_node_it_needs(
    precision: str, onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Runs everywhere: hide the package (a None entry makes ``import tensorrt`` raise ImportError).
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert not tensorrt_available()
    with pytest.raises(TensorRTUnavailable, match=r"^needs a t4 node with TensorRT: "):
        build_tensorrt_engine(onnx_path, "t4", precision, tmp_path, tmp_path / "timing.cache")
    assert not (tmp_path / "model.plan").exists()


@pytest.mark.skipif(tensorrt_available(), reason="this node has TensorRT and CUDA")
def test_build_on_this_node_raises_needs_device(onnx_path: Path, tmp_path: Path) -> None:
    with pytest.raises(TensorRTUnavailable, match=r"^needs a a10g node with TensorRT: "):
        build_tensorrt_engine(onnx_path, "a10g", "fp32", tmp_path, tmp_path / "timing.cache")


def test_no_cuda_device_is_reported(onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    from adas.packaging import tensorrt_engines

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))

    def no_driver() -> list[object]:
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(tensorrt_engines, "_cuda_devices", no_driver)
    with pytest.raises(TensorRTUnavailable, match=r"^needs a orin node with TensorRT: no CUDA device here"):
        build_tensorrt_engine(onnx_path, "orin", "fp16", tmp_path, tmp_path / "timing.cache")


def test_graph_is_validated_once_tensorrt_is_there(
    onnx_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from adas.packaging import tensorrt_engines

    # Pretend TensorRT and a GPU exist: the input checks that follow must still hold.
    monkeypatch.setattr(tensorrt_engines, "_require_tensorrt", lambda device: (object(), object()))
    with pytest.raises(ValueError, match="int8 TensorRT engines are built from a Q/DQ graph"):
        build_tensorrt_engine(onnx_path, "t4", "int8", tmp_path, tmp_path / "timing.cache")
    with pytest.raises(ValueError, match="unknown precision"):
        build_tensorrt_engine(onnx_path, "t4", "int4", tmp_path, tmp_path / "timing.cache")


def test_fp16_conversion_keeps_float32_io_and_matches(onnx_path: Path, contract: Contract) -> None:
    import onnxruntime as ort

    fp32 = onnx.load(str(onnx_path))
    fp16 = convert_to_fp16(fp32)
    onnx.checker.check_model(fp16, full_check=True)
    assert [i.type.tensor_type.elem_type for i in fp16.graph.input] == [onnx.TensorProto.FLOAT]
    assert {o.type.tensor_type.elem_type for o in fp16.graph.output} == {onnx.TensorProto.FLOAT}
    weights = [i for i in fp16.graph.initializer if len(i.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    # Resize scales must stay float32 (ONNX spec): the graph would not type-check otherwise.
    x = np.random.default_rng(0).uniform(-2, 2, (2, *contract.input.shape[1:])).astype(np.float32)
    ref = ort.InferenceSession(fp32.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )
    got = ort.InferenceSession(fp16.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"images": x}
    )
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == np.float32 and g.shape == r.shape
        assert float(np.max(np.abs(r - g))) <= 1e-2 * max(1.0, float(np.max(np.abs(r))))


@pytest.mark.gpu
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_real_tensorrt_build(precision: str, onnx_path: Path, contract: Contract, tmp_path: Path) -> None:
    from adas.packaging.tensorrt_engines import DEVICE_GPU_NAMES, _cuda_devices

    gpu = _cuda_devices()[0].name.lower()
    device = next((d for d, names in DEVICE_GPU_NAMES.items() if any(n.lower() in gpu for n in names)), None)
    if device is None:
        pytest.skip(f"GPU {gpu!r} is not one of the catalog devices")
    kwargs: dict[str, Any] = {}
    if precision == "int8":  # the TensorRT Q/DQ graph is calibrated inside the build
        frames = np.random.default_rng(0).integers(0, 256, (16, 96, 384, 3), dtype=np.uint8)
        kwargs = {"calibration_frames": frames, "contract": contract}
    cache = tmp_path / "timing.cache"
    build = build_tensorrt_engine(onnx_path, device, precision, tmp_path / "plan", cache, **kwargs)
    assert build.path.is_file() and build.size_bytes > 0 and build.strongly_typed
    assert cache.is_file() and not build.timing_cache_reused
    again = build_tensorrt_engine(onnx_path, device, precision, tmp_path / "plan2", cache, **kwargs)
    assert again.timing_cache_reused
    assert build.gpu["name"] and build.profile["max"][0] == 16
