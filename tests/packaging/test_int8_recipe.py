"""The target's CPU decides the INT8 recipe (issue #16 item 1): ``reduce_range`` (7-bit
weights) only where the target lacks VNNI; the build records the builder's and the target's
instruction sets and the ONNX Runtime version."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adas.catalog import load_catalog
from adas.cpu_isa import ISA_LEVELS
from adas.intake.contract import Contract
from adas.packaging.build import ort_build_environment
from adas.packaging.config import default_packaging_config
from adas.packaging.ort_int8 import build_int8_engine
from adas.packaging.qdq_graph import read_calibration_cache


@pytest.mark.parametrize(
    ("isa", "reduce_range"), [("avx2", True), ("avx512_vnni", False), ("amx", False), (None, True)]
)
def test_reduce_range_only_where_the_target_lacks_vnni(isa: str | None, reduce_range: bool) -> None:
    recipe = default_packaging_config().int8.recipe("onnxruntime", isa)  # type: ignore[arg-type]
    assert recipe.reduce_range is reduce_range
    assert (recipe.activation_type, recipe.target_isa) == ("uint8", isa)


def test_the_shipped_cpu_targets_get_their_recipe_from_their_isa() -> None:
    catalog, int8 = load_catalog(), default_packaging_config().int8
    generic, vnni = catalog.target("x86-cpu"), catalog.target("x86-cpu-vnni")
    assert (generic.isa, vnni.isa) == ("avx2", "avx512_vnni")
    assert int8.recipe("onnxruntime", generic.isa).reduce_range is True
    assert int8.recipe("onnxruntime", vnni.isa).reduce_range is False
    # TensorRT's symmetric int8 graph never reduces the range, whatever the CPU.
    assert int8.recipe("tensorrt", None).reduce_range is False


def test_the_build_records_builder_and_target_isa_and_the_onnxruntime_version() -> None:
    env = ort_build_environment(load_catalog().target("x86-cpu-vnni"))
    assert env["target_isa"] == "avx512_vnni"
    assert env["builder_isa"] in (*ISA_LEVELS, "none")
    assert env["onnxruntime_version"] == importlib.metadata.version("onnxruntime")


def _max_abs_int8_weight(path: Path) -> int:
    model = onnx.load(str(path))
    dq_inputs = {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    weights = [
        numpy_helper.to_array(t)
        for t in model.graph.initializer
        if t.name in dq_inputs and t.data_type == onnx.TensorProto.INT8
    ]
    assert weights, "the INT8 graph has no int8 weights"
    return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)


@pytest.mark.parametrize(
    ("isa", "reduce_range", "max_weight"), [("avx2", True, 64), ("avx512_vnni", False, 127)]
)
def test_int8_engine_quantizes_weights_for_the_target_isa(
    onnx_path: Path, contract: Contract, tmp_path: Path, isa: str, reduce_range: bool, max_weight: int
) -> None:
    int8 = default_packaging_config().int8
    config = int8.model_copy(update={"fallback": int8.fallback.model_copy(update={"enabled": False})})
    _, _, h, w = contract.input.shape
    frames = np.random.default_rng(0).integers(0, 256, (4, h, w, 3), dtype=np.uint8)
    build = build_int8_engine(onnx_path, frames, contract, tmp_path, config, target_isa=isa)  # type: ignore[arg-type]
    assert (build.target_isa, build.reduce_range) == (isa, reduce_range)
    assert build.to_metadata()["reduce_range"] is reduce_range
    # 7-bit weights span [-64, 64]; full 8-bit per-channel symmetric weights reach 127.
    assert _max_abs_int8_weight(build.path) == max_weight
    header = read_calibration_cache(build.calibration_cache)[0]
    assert (header["reduce_range"], header["target_isa"]) == (str(reduce_range), isa)
