"""The PyTorch CUDA path (eager, CUDA graphs, AOTInductor; FP32 and FP16).

On a GPU node every mode must pass the packaging equivalence check against the bundle's
program on the CPU with the tolerances shipped in config/packaging.yaml. Without CUDA (CI)
those tests skip, and building an engine must fail with a message naming what is missing.
"""

from pathlib import Path

import numpy as np
import pytest

from adas.intake.bundle import read_contract
from adas.intake.model import load_model
from adas.packaging.config import load_packaging_config
from adas.packaging.equivalence import ModuleReference, check_equivalence, run_reference
from adas.packaging.torch_cuda import CudaUnavailable, TorchCudaEngine, cuda_available

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "demo" / "bundles" / "candidate"
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def demo_bundle():  # type: ignore[no-untyped-def]
    contract = read_contract(BUNDLE)
    return contract, load_model(BUNDLE, contract)


def _engine(demo_bundle, tmp_path: Path, mode: str, precision: str) -> TorchCudaEngine:  # type: ignore[no-untyped-def]
    contract, module = demo_bundle
    names = [o.name for o in contract.outputs]
    return TorchCudaEngine(
        module,
        names,
        contract.input.shape[1:],
        mode=mode,
        precision=precision,
        package_dir=tmp_path,  # type: ignore[arg-type]
    )


@pytest.mark.skipif(cuda_available(), reason="this node has CUDA")
def test_without_cuda_building_an_engine_names_what_is_missing(demo_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CudaUnavailable, match=r"CPU build|no CUDA device"):
        _engine(demo_bundle, tmp_path, "eager", "fp32")


def test_unknown_mode_or_precision_is_refused_before_touching_cuda(demo_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="mode 'tensorrt' is not one of"):
        _engine(demo_bundle, tmp_path, "tensorrt", "fp32")
    with pytest.raises(ValueError, match="INT8 on GPU is TensorRT's"):
        _engine(demo_bundle, tmp_path, "eager", "int8")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mode", ["eager", "cuda_graph", "aoti"])
def test_cuda_engine_passes_the_packaging_equivalence_check(
    demo_bundle, tmp_path: Path, mode: str, precision: str
) -> None:  # type: ignore[no-untyped-def]
    contract, module = demo_bundle
    engine = _engine(demo_bundle, tmp_path, mode, precision)
    cfg = load_packaging_config()  # the shipped tolerances of this precision
    reference = ModuleReference(module, [o.name for o in contract.outputs])  # the demo bundle: trusted
    report = check_equivalence(reference, engine, contract, cfg, precision, None, 0)
    assert report.passed, report.failures
    if mode == "aoti":
        assert engine.package_path is not None and engine.package_path.stat().st_size > 0


@pytest.mark.gpu
@needs_cuda
def test_fp16_differs_from_fp32_and_cuda_graph_replays_eager(demo_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    contract, module = demo_bundle
    names = [o.name for o in contract.outputs]
    x = np.random.default_rng(1).standard_normal((5, *contract.input.shape[1:])).astype(np.float32)
    ref = run_reference(module, x, names)
    eager = _engine(demo_bundle, tmp_path, "eager", "fp32").run(x)
    graphed_engine = _engine(demo_bundle, tmp_path, "cuda_graph", "fp32")
    graphed = graphed_engine.run(x)
    again = graphed_engine.run(x[::-1].copy())  # the static buffers are refilled, not stale
    half = _engine(demo_bundle, tmp_path, "eager", "fp16").run(x)
    for n in names:
        # Same kernels replayed: equal up to cuDNN's choice of algorithm between instances.
        np.testing.assert_allclose(graphed[n], eager[n], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(again[n], eager[n][::-1], atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(eager[n], ref[n], atol=1e-3, rtol=1e-3)
        assert half[n].dtype == np.float32
    # FP16 really ran at half precision: its error is orders above FP32's.
    assert (
        np.abs(half["heatmap"] - ref["heatmap"]).max() > 10 * np.abs(eager["heatmap"] - ref["heatmap"]).max()
    )


@pytest.mark.gpu
@needs_cuda
def test_bad_inputs_are_refused_with_the_expected_shape(demo_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    engine = _engine(demo_bundle, tmp_path, "eager", "fp32")
    with pytest.raises(ValueError, match=r"the engine takes \[B, 3, 96, 384\]"):
        engine.run(np.zeros((1, 3, 64, 64), np.float32))
    with pytest.raises(ValueError, match=r"outside 1\.\.64"):
        engine.run(np.zeros((65, 3, 96, 384), np.float32))
