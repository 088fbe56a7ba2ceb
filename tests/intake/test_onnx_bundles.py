"""ONNX bundles at intake (#19 item 1): judged from their bytes first, then run in the sandbox
(ONNX Runtime, batch 1 and 2), then their real outputs on a probe batch against what the
contract declares. Every refusal names the field and what the model actually has."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import yaml
from torch import nn

from adas.detector.dense_bundle import write_dense_bundle
from adas.detector.dense_model import build_dense_model
from adas.detector.preprocess import normalize
from adas.intake.bundle import BundleRejected, validate_bundle
from adas.intake.contract import CONTRACT_FILE, Lineage, Normalization
from adas.intake.probe import probe_batch, probe_frames

DEMO = Path(__file__).resolve().parents[2] / "demo" / "bundles"
E2E = DEMO / "centernet-e2e"
LINEAGE = Lineage(training_run_id="test", dataset_tag="golden_train@test", git_sha="abcdef1")
NORM = Normalization(scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
CLASSES = [(1, "car"), (2, "truck"), (3, "motorcycle")]


@pytest.fixture(scope="module")
def dense_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return write_dense_bundle(
        build_dense_model(width=8).eval(),
        tmp_path_factory.mktemp("dense") / "dense",
        version="2.0.0",
        model_name="dense-test",
        task="vehicle-detection",
        lineage=LINEAGE,
        normalization=NORM,
        classes=CLASSES,
    )


def _copy(src: Path, dest: Path, contract_edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    shutil.copytree(src, dest)
    if contract_edit is not None:
        data = yaml.safe_load((dest / CONTRACT_FILE).read_text())
        contract_edit(data)
        (dest / CONTRACT_FILE).write_text(yaml.safe_dump(data, sort_keys=False))
    return dest


def _edit_graph(bundle: Path, change: Callable[[onnx.ModelProto], None]) -> Path:
    model = onnx.load(str(bundle / "model.onnx"))
    change(model)
    (bundle / "model.onnx").write_bytes(model.SerializeToString())  # as is: no external-data writing
    return bundle


def _refused(bundle: Path, workdir: Path) -> BundleRejected:
    with pytest.raises(BundleRejected) as info:
        validate_bundle(bundle, workdir)
    return info.value


# --------------------------------------------------------------------------- accepted


def test_shipped_e2e_bundle_is_taken_in(tmp_path: Path) -> None:
    v = validate_bundle(E2E, tmp_path)
    assert v.contract.model_format == "onnx"
    assert v.output_shapes == {"detections": [-1, 100, 6]}
    assert v.parameter_count > 100_000  # the initializers of the graph


def test_letterboxed_dense_bundle_is_taken_in(dense_bundle: Path, tmp_path: Path) -> None:
    v = validate_bundle(dense_bundle, tmp_path)
    assert v.contract.postprocess.kind == "dense"
    assert v.output_shapes["output0"][:2] == [-1, 7]


def test_probe_frames_show_the_letterbox_bands(dense_bundle: Path, tmp_path: Path) -> None:
    contract = validate_bundle(
        dense_bundle, tmp_path
    ).contract  # 96x384 frames in 160x512: 16 rows top and bottom
    frames = probe_frames(contract)
    assert frames.shape == (4, 160, 512, 3)
    assert (frames[:, :16] == 114).all() and (frames[:, -16:] == 114).all()
    assert not (frames[:, 16:-16] == 114).all()


# --------------------------------------------------------------------------- refusals, from the bytes


def test_opset_below_17_is_refused(tmp_path: Path) -> None:
    def opset16(model: onnx.ModelProto) -> None:
        model.opset_import[0].version = 16

    err = _refused(_edit_graph(_copy(E2E, tmp_path / "b"), opset16), tmp_path / "w")
    assert err.field == "model.onnx" and "opset 16" in err.reason and ">= 17" in err.reason


def test_external_data_is_refused_before_anything_runs(tmp_path: Path) -> None:
    def external(model: onnx.ModelProto) -> None:
        weight = model.graph.initializer[0]
        weight.data_location = onnx.TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"

    err = _refused(_edit_graph(_copy(E2E, tmp_path / "b"), external), tmp_path / "w")
    assert err.field == "model.onnx" and "refers to external data" in err.reason


def test_custom_operator_domain_is_refused(tmp_path: Path) -> None:
    def custom(model: onnx.ModelProto) -> None:
        model.graph.node[0].domain = "evil.ops"
        model.opset_import.append(onnx.helper.make_opsetid("evil.ops", 1))

    err = _refused(_edit_graph(_copy(E2E, tmp_path / "b"), custom), tmp_path / "w")
    assert "domain 'evil.ops'" in err.reason


def test_not_a_protobuf_is_refused(tmp_path: Path) -> None:
    bundle = _copy(E2E, tmp_path / "b")
    (bundle / "model.onnx").write_bytes(b"\x08\x07 not a protobuf")
    assert "not an ONNX model" in _refused(bundle, tmp_path / "w").reason


def test_output_name_missing_from_the_model_is_refused(tmp_path: Path) -> None:
    def rename(data: dict[str, Any]) -> None:
        data["outputs"][0]["name"] = "dets"
        data["postprocess"]["packed_output"] = "dets"

    err = _refused(_copy(E2E, tmp_path / "b", rename), tmp_path / "w")
    assert err.field == "contract.yaml: outputs"
    assert "the model's outputs are ['detections']" in err.reason and "'dets'" in err.reason


def test_output_shape_inconsistent_with_the_class_count_is_refused(
    dense_bundle: Path, tmp_path: Path
) -> None:
    def four_classes(data: dict[str, Any]) -> None:
        data["classes"].append({"id": 4, "name": "bus"})
        data["outputs"][0]["shape"][1] = 8  # consistent on paper: 4 box + 4 classes

    err = _refused(_copy(dense_bundle, tmp_path / "b", four_classes), tmp_path / "w")
    assert err.field == "contract.yaml: outputs[0].shape"
    # the exporter leaves the axis symbolic in the file: the sandboxed smoke forward finds the 7
    assert "[-1, 8, 6400]" in err.reason and "the model produced [1, 7, 6400]" in err.reason


# --------------------------------------------------------------------------- refusals, on the probe batch


def test_transposed_dense_layout_is_refused(dense_bundle: Path, tmp_path: Path) -> None:
    def bnf(data: dict[str, Any]) -> None:
        data["postprocess"]["layout"] = "BNF"
        data["outputs"][0]["shape"] = [-1, -1, -1]  # nothing on paper to contradict

    err = _refused(_copy(dense_bundle, tmp_path / "b", bnf), tmp_path / "w")
    assert err.field == "contract.yaml: postprocess.layout"
    assert "has 6400 there, not the 7" in err.reason and "layout BFN?" in err.reason


def test_pixel_boxes_declared_normalized_are_refused(dense_bundle: Path, tmp_path: Path) -> None:
    def normalized(data: dict[str, Any]) -> None:
        data["postprocess"]["coordinates"] = "normalized"

    err = _refused(_copy(dense_bundle, tmp_path / "b", normalized), tmp_path / "w")
    assert err.field == "contract.yaml: postprocess.coordinates"
    assert "declares normalized boxes, but the model's box values reach" in err.reason


class _Rows(nn.Module):
    """A detector that decodes itself, K rows of x1, y1, x2, y2, score, label: boxes scaled by
    ``box_scale`` (1: normalized), the last ``pad_rows`` rows with label ``pad_label``."""

    def __init__(self, box_scale: float, label: float, pad_rows: int = 0, pad_label: float = -1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 1)
        k = torch.arange(10, dtype=torch.float32) / 10
        boxes = torch.stack([0.1 + 0.5 * k, 0.1 + 0.3 * k, 0.2 + 0.5 * k, 0.4 + 0.3 * k], -1) * box_scale
        labels = torch.full((10,), label)
        labels[10 - pad_rows :] = pad_label
        self.register_buffer("rows", torch.cat([boxes, torch.full((10, 1), 0.5), labels[:, None]], -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = torch.sigmoid(self.conv(x).mean((1, 2, 3)))[:, None, None].expand(-1, 10, 1)
        rows = self.rows[None].expand(x.shape[0], -1, -1)
        return torch.cat([rows[..., :4], score, rows[..., 5:]], -1)


def _rows_bundle(dest: Path, model: nn.Module, edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    def ten_rows(data: dict[str, Any]) -> None:
        data["outputs"][0]["shape"] = [-1, 10, 6]
        data["postprocess"]["max_detections"] = 10
        if edit is not None:
            edit(data)

    bundle = _copy(E2E, dest, ten_rows)
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, 3, 96, 384),),
        str(bundle / "model.onnx"),
        input_names=["images"],
        output_names=["detections"],
        dynamic_axes={"images": {0: "batch"}, "detections": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    return bundle


def test_rows_model_as_declared_is_taken_in(tmp_path: Path) -> None:
    v = validate_bundle(_rows_bundle(tmp_path / "b", _Rows(box_scale=384.0, label=1.0)), tmp_path / "w")
    assert v.output_shapes == {"detections": [-1, 10, 6]}


def test_normalized_boxes_declared_as_pixels_are_refused(tmp_path: Path) -> None:
    err = _refused(_rows_bundle(tmp_path / "b", _Rows(box_scale=1.0, label=1.0)), tmp_path / "w")
    assert err.field == "contract.yaml: postprocess.coordinates"
    assert "declares input_pixels boxes" in err.reason and "look normalized" in err.reason


def test_labels_beyond_the_class_count_are_refused(tmp_path: Path) -> None:
    err = _refused(_rows_bundle(tmp_path / "b", _Rows(box_scale=384.0, label=5.0)), tmp_path / "w")
    assert err.field == "contract.yaml: postprocess.label_map"
    assert "label 5" in err.reason and "3 classes" in err.reason and "below 3" in err.reason


def test_padding_other_than_declared_is_refused(tmp_path: Path) -> None:
    model = _Rows(box_scale=384.0, label=1.0, pad_rows=4, pad_label=-1.0)  # padded by label -1
    err = _refused(_rows_bundle(tmp_path / "b", model), tmp_path / "w")  # declared zero_score
    assert err.field == "contract.yaml: postprocess.padding"
    assert "label -1" in err.reason and "negative_label?" in err.reason

    def negative_label(data: dict[str, Any]) -> None:
        data["postprocess"]["padding"] = "negative_label"

    assert validate_bundle(_rows_bundle(tmp_path / "ok", model, negative_label), tmp_path / "w2")


def test_probe_batch_is_the_contracts_normalization(dense_bundle: Path, tmp_path: Path) -> None:
    contract = validate_bundle(dense_bundle, tmp_path).contract
    bgr = contract.model_copy(update={"input": contract.input.model_copy(update={"color": "BGR"})})
    for c in (contract, bgr):
        np.testing.assert_array_equal(
            probe_batch(c), normalize(probe_frames(c), c.input.normalization, c.input.color)
        )
