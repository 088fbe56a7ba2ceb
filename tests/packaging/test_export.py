"""ONNX export round trip, packaging config validation and operator coverage per runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from adas.config_errors import ConfigError
from adas.detector.bundle import build_contract
from adas.intake.contract import Contract, Normalization
from adas.packaging.config import PACKAGING_FILE, load_packaging_config
from adas.packaging.export import ExportError, ExportResult, export_onnx
from adas.packaging.operators import (
    TENSORRT_SUPPORTED_OPS,
    UnsupportedOperatorError,
    coverage_report,
    require_supported_ops,
)
from adas.storage import sha256_file


def test_export_records_graph_facts(exported: ExportResult, contract: Contract) -> None:
    model = onnx.load(str(exported.path))
    assert exported.opset == 17
    assert exported.ir_version == model.ir_version
    assert exported.node_count == len(model.graph.node) == sum(exported.op_histogram.values())
    assert exported.op_histogram["Conv"] >= 3
    assert exported.sha256 == sha256_file(exported.path)[0]
    assert exported.size_bytes == exported.path.stat().st_size
    assert exported.input_name == contract.input.name
    assert exported.output_names == [o.name for o in contract.outputs]
    assert 0 <= exported.max_abs_diff < 1e-4
    # Nodes carry the module names of their parameters (used by INT8 fallback patterns).
    producers = {o: n.name for n in model.graph.node for o in n.output}
    for head in exported.output_names:
        assert producers[head].startswith(f"/{head}/"), producers[head]
    assert "/stem/conv/Conv" in producers.values()
    meta = exported.to_metadata()
    assert meta["path"] == str(exported.path) and meta["sha256"] == exported.sha256


@pytest.mark.parametrize("batch", [1, 3])
def test_ort_fp32_matches_torch_with_dynamic_batch(
    batch: int, exported: ExportResult, bundle: Path, contract: Contract
) -> None:
    import onnxruntime as ort

    from adas.detector.bundle import load_bundle_model

    x = np.random.default_rng(batch).uniform(-2, 2, (batch, *contract.input.shape[1:])).astype(np.float32)
    with torch.no_grad():
        ref = load_bundle_model(bundle)(torch.from_numpy(x))
    sess = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    got = sess.run(exported.output_names, {exported.input_name: x})
    for r, g, spec in zip(ref, got, contract.outputs, strict=True):
        assert g.shape == (batch, *spec.shape[1:])
        assert float(np.max(np.abs(r.numpy() - g))) < 1e-4


def test_export_sanity_bound_is_enforced(bundle: Path, contract: Contract, tmp_path: Path) -> None:
    from adas.detector.bundle import load_bundle_model
    from adas.packaging.export import ExportError

    with pytest.raises(ExportError, match="differs from the torch module"):
        export_onnx(load_bundle_model(bundle), contract, tmp_path / "m.onnx", max_abs_diff_tolerance=1e-30)


# --------------------------------------------------------------------------- config


def test_shipped_config_loads() -> None:
    cfg = load_packaging_config(PACKAGING_FILE)
    assert cfg.onnx.opset == 17
    assert cfg.equivalence.num_random_inputs >= 1000
    assert cfg.equivalence.for_precision("int8").max_map_drop_points == 1.0
    assert cfg.int8.calibration_method == "MinMax" and cfg.int8.per_channel
    assert cfg.int8.for_runtime("tensorrt").activation_symmetric
    assert cfg.latency.batch_sizes == [1, 2, 4, 8, 16]


def test_config_errors_name_file_and_field(tmp_path: Path) -> None:
    text = PACKAGING_FILE.read_text()
    bad = tmp_path / "packaging.yaml"
    bad.write_text(text.replace("activation_symmetric: true", "activation_symmetric: false"))
    with pytest.raises(ConfigError, match=r"packaging\.yaml is invalid:\n  - int8\.runtimes: .*symmetric"):
        load_packaging_config(bad)
    bad.write_text(text.replace("num_random_inputs: 1000", "num_random_inputs: 0"))
    with pytest.raises(ConfigError, match=r"equivalence\.num_random_inputs"):
        load_packaging_config(bad)
    bad.write_text(text.replace("always_fp32_patterns: []", 'always_fp32_patterns: ["^/(heatmap"]'))
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        load_packaging_config(bad)


# --------------------------------------------------------------------------- operators


def test_exported_graph_is_covered_by_both_runtimes(exported: ExportResult) -> None:
    for runtime in ("onnxruntime", "tensorrt"):
        report = require_supported_ops(coverage_report(exported.path, runtime))
        assert report.supported and report.coverage == 1.0
        counts = {o.op_type: o.count for o in report.ops}
        assert counts["Conv"] == sum(
            1 for n in onnx.load(str(exported.path)).graph.node if n.op_type == "Conv"
        )
        assert runtime in report.method or "onnx-tensorrt" in report.method
    assert "10.1-GA" in coverage_report(exported.path, "tensorrt").method


def _graph(
    nodes: list[onnx.NodeProto],
    opsets: list[onnx.OperatorSetIdProto],
    path: Path,
    inits: list[onnx.TensorProto] | None = None,
) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(
        helper.make_graph(nodes, "g", [x], [y], initializer=inits or []), opset_imports=opsets
    )
    onnx.save(model, str(path))
    return path


def test_custom_domain_op_fails_fast_naming_node_and_op(tmp_path: Path) -> None:
    path = _graph(
        [
            helper.make_node("Relu", ["x"], ["h"], name="/backbone/Relu"),
            helper.make_node("Foo", ["h"], ["y"], name="/head/Foo_3", domain="adas.custom"),
        ],
        [helper.make_opsetid("", 17), helper.make_opsetid("adas.custom", 1)],
        tmp_path / "custom.onnx",
    )
    for runtime in ("tensorrt", "onnxruntime"):
        report = coverage_report(path, runtime)
        assert not report.supported
        assert [(u.node, u.op_type) for u in report.unsupported] == [("/head/Foo_3", "Foo")]
        assert {o.op_type: o.supported for o in report.ops} == {"Relu": True, "Foo": False}
        with pytest.raises(
            UnsupportedOperatorError,
            match=rf"node '/head/Foo_3' uses op 'Foo' which {runtime} does not support",
        ):
            require_supported_ops(report)


def test_op_outside_the_tensorrt_table_fails_only_for_tensorrt(tmp_path: Path) -> None:
    assert "Unique" not in TENSORRT_SUPPORTED_OPS
    path = _graph(
        [
            helper.make_node("Unique", ["x"], ["u"], name="/post/Unique", sorted=1),
            helper.make_node("Identity", ["x"], ["y"], name="/post/Identity"),
        ],
        [helper.make_opsetid("", 17)],
        tmp_path / "unique.onnx",
    )
    require_supported_ops(coverage_report(path, "onnxruntime"))
    with pytest.raises(UnsupportedOperatorError, match="node '/post/Unique' uses op 'Unique' which tensorrt"):
        require_supported_ops(coverage_report(path, "tensorrt"))


def test_tensorrt_rejects_asymmetric_qdq(tmp_path: Path) -> None:
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(3, np.uint8), "zp"),
    ]
    path = _graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="/q"),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], name="/dq"),
        ],
        [helper.make_opsetid("", 17)],
        tmp_path / "qdq.onnx",
        inits,
    )
    require_supported_ops(coverage_report(path, "onnxruntime"))
    report = coverage_report(path, "tensorrt")
    assert {u.node for u in report.unsupported} == {"/q", "/dq"}
    with pytest.raises(UnsupportedOperatorError, match="int8 only"):
        require_supported_ops(report)


def test_unknown_runtime_is_rejected(exported: ExportResult) -> None:
    with pytest.raises(ValueError, match="unknown runtime"):
        coverage_report(exported.path, "openvino")


class _Cummax(torch.nn.Module):
    """A head that ends in an operator ONNX opset 17 cannot express."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        heat, _ = torch.cummax(x[:, :3, ::4, ::4], dim=1)
        return heat, x[:, :2, ::4, ::4], x[:, :2, ::4, ::4]


def test_an_unsupported_operator_is_named_with_module_and_hint(tmp_path: Path) -> None:
    contract = build_contract(
        model_name="cummax",
        version="0.1.0",
        task="vehicle-detection-2d",
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    with pytest.raises(ExportError) as info:
        export_onnx(_Cummax(), contract, tmp_path / "model.onnx")
    message = str(info.value)
    assert "operator aten::cummax" in message and "opset 17" in message, message
    assert "_Cummax" in message and "hint:" in message, message
