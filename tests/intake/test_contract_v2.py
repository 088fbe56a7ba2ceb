"""Contract schema v2: v1 bundles upgrade on read, every postprocess kind validates, and
refusals name the field a contract author wrote."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from adas.intake.bundle import BundleRejected, read_contract
from adas.intake.contract import (
    SCHEMA_VERSION,
    Contract,
    DensePostprocess,
    HeatmapPostprocess,
    QueriesPostprocess,
    readable_errors,
)

DEMO = Path(__file__).resolve().parents[2] / "demo" / "bundles"


def _v1() -> dict[str, Any]:
    return yaml.safe_load((DEMO / "candidate" / "contract.yaml").read_text())


def _base(outputs: list[dict[str, Any]], postprocess: dict[str, Any], **input_: Any) -> dict[str, Any]:
    """A v2 contract of a 2-class detector with a 160x512 input."""
    data = _v1()
    data.update(
        schema_version=2,
        model_format="onnx",
        model_file="model.onnx",
        classes=[{"id": 1, "name": "car"}, {"id": 3, "name": "motorcycle"}],
        outputs=outputs,
        postprocess=postprocess,
    )
    data["input"].update(shape=[-1, 3, 160, 512], **input_)
    return data


def _out(name: str, shape: list[int], dtype: str = "float32") -> dict[str, Any]:
    return {"name": name, "shape": shape, "dtype": dtype}


SEL = {"score_threshold": 0.25, "max_detections": 100}
DENSE = _base(
    [_out("output0", [-1, 6, 5376])],
    {"kind": "dense", "output": "output0", "layout": "BFN", "nms_iou_threshold": 0.7, **SEL},
    resize="letterbox",
)
QUERIES = _base(
    [_out("logits", [-1, 300, 3]), _out("pred_boxes", [-1, 300, 4])],
    {
        "kind": "queries",
        "scores_output": "logits",
        "boxes_output": "pred_boxes",
        "activation": "softmax",
        **SEL,
    },
)
DETECTIONS = _base(
    [_out("num_dets", [-1, 1], "int32"), _out("dets", [-1, 300, 6])],
    {
        "kind": "detections",
        "packed_output": "dets",
        "num_detections_output": "num_dets",
        "padding": "num_detections",
        **SEL,
    },
    source_size={"name": "orig_target_sizes", "order": "wh"},
)
RAGGED = _base(
    [
        _out("boxes", [-1, 4]),
        _out("scores", [-1]),
        _out("labels", [-1], "int64"),
        _out("counts", [-1], "int32"),
    ],
    {
        "kind": "ragged",
        "boxes_output": "boxes",
        "scores_output": "scores",
        "labels_output": "labels",
        "count_output": "counts",
        "coordinates": "source_pixels",
        "label_map": {"background_offset": 1},
        **SEL,
    },
)


def _errors(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as exc:
        Contract.model_validate(data)
    return readable_errors(exc.value)


@pytest.mark.parametrize("bundle", ["candidate", "production"])
def test_v1_demo_bundles_load_and_upgrade(bundle: str) -> None:
    raw = yaml.safe_load((DEMO / bundle / "contract.yaml").read_text())
    assert raw["schema_version"] == 1 and raw["postprocess"]["type"] == "centernet"
    contract = Contract.model_validate(raw)
    assert contract.schema_version == SCHEMA_VERSION == 2
    post = contract.postprocess
    assert isinstance(post, HeatmapPostprocess) and post.kind == "heatmap"
    # Every field other modules read keeps its name and value.
    assert (post.heatmap_output, post.size_output, post.offset_output) == ("heatmap", "box_size", "offset")
    assert (post.stride, post.score_threshold, post.max_detections) == (4, 0.3, 100)
    assert post.nms_iou_threshold == raw["postprocess"]["nms_iou_threshold"]
    assert contract.input.normalization.scale == raw["input"]["normalization"]["scale"]
    assert contract.input.shape == [-1, 3, 96, 384] and contract.input.color == "RGB"
    assert contract.input.resize == "stretch" and contract.input.letterbox is None
    # The upgraded contract is a v2 contract: it round-trips as such.
    dumped = contract.model_dump(mode="json")
    assert dumped["schema_version"] == 2 and dumped["postprocess"]["kind"] == "heatmap"
    assert "type" not in dumped["postprocess"]
    assert Contract.model_validate(dumped) == contract
    # read from a bundle directory too
    assert read_contract(DEMO / bundle) == contract


def test_v1_without_schema_version_and_the_centernet_alias() -> None:
    raw = _v1()
    del raw["schema_version"], raw["postprocess"]["type"]
    assert Contract.model_validate(raw).postprocess.kind == "heatmap"
    v2 = _v1()
    v2["schema_version"] = 2
    v2["postprocess"]["kind"] = v2["postprocess"].pop("type")  # "centernet", a v2 alias
    assert Contract.model_validate(v2).postprocess.kind == "heatmap"
    # v1's ``type`` is not a v2 field.
    v2["postprocess"]["type"] = "centernet"
    assert ("postprocess.type", "Extra inputs are not permitted") in _errors(v2)


@pytest.mark.parametrize(
    "data", [DENSE, QUERIES, DETECTIONS, RAGGED], ids=["dense", "queries", "detections", "ragged"]
)
def test_every_kind_validates_and_round_trips(data: dict[str, Any]) -> None:
    contract = Contract.model_validate(data)
    assert contract.postprocess.kind == data["postprocess"]["kind"]
    assert contract.postprocess.score_threshold == 0.25  # evaluation reads it on every kind
    assert Contract.model_validate(contract.model_dump(mode="json")) == contract


def test_dense_and_queries_parse_their_options() -> None:
    dense = Contract.model_validate(DENSE)
    assert isinstance(dense.postprocess, DensePostprocess)
    assert (dense.postprocess.box_encoding, dense.postprocess.scores, dense.postprocess.nms) == (
        "cxcywh",
        "probabilities",
        "class_aware",
    )
    assert dense.input.letterbox is not None and dense.input.letterbox.pad_value == 114
    queries = Contract.model_validate(QUERIES)
    assert isinstance(queries.postprocess, QueriesPostprocess) and queries.postprocess.activation == "softmax"


def test_unknown_kind_is_refused_naming_the_field() -> None:
    data = copy.deepcopy(DENSE)
    data["postprocess"]["kind"] = "anchors"
    (where, msg), *_ = _errors(data)
    assert where == "postprocess.kind"
    assert "'anchors'" in msg and "dense" in msg and "ragged" in msg
    del data["postprocess"]["kind"]
    assert _errors(data)[0][0] == "postprocess.kind"


def test_unknown_kind_through_intake_names_file_and_field(tmp_path: Path) -> None:
    data = copy.deepcopy(DENSE)
    data["postprocess"]["kind"] = "anchors"
    (tmp_path / "contract.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(BundleRejected, match=r"contract.yaml: postprocess.kind"):
        read_contract(tmp_path)


@pytest.mark.parametrize(
    ("data", "edit", "where", "says"),
    [
        (DENSE, lambda p: p.pop("layout"), "postprocess.layout", "Field required"),
        (DENSE, lambda p: p.update(layout="NBF"), "postprocess.layout", "'BNF' or 'BFN'"),
        (DENSE, lambda p: p.pop("nms_iou_threshold"), "postprocess.nms_iou_threshold", "Field required"),
        (DENSE, lambda p: p.pop("score_threshold"), "postprocess.score_threshold", "Field required"),
        (QUERIES, lambda p: p.pop("activation"), "postprocess.activation", "Field required"),
        (QUERIES, lambda p: p.pop("scores_output"), "postprocess.scores_output", "Field required"),
        (DETECTIONS, lambda p: p.pop("padding"), "postprocess.padding", "Field required"),
        (DETECTIONS, lambda p: p.pop("num_detections_output"), "postprocess", "needs num_detections_output"),
        (DETECTIONS, lambda p: p.pop("packed_output"), "postprocess", "set packed_output"),
        (
            DETECTIONS,
            lambda p: p.update(columns=["x1", "y1", "x2", "y2", "score"]),
            "postprocess",
            "lack ['label']",
        ),
        (RAGGED, lambda p: p.pop("count_output"), "postprocess", "exactly one way"),
        (RAGGED, lambda p: p.update(batch_index_output="boxes"), "postprocess", "exactly one way"),
        (
            RAGGED,
            lambda p: p.update(label_map={"mode": "category_id", "background_offset": 1}),
            "postprocess.label_map",
            "background_offset",
        ),
    ],
)
def test_per_kind_required_fields_are_refused_readably(
    data: dict[str, Any], edit: Any, where: str, says: str
) -> None:
    data = copy.deepcopy(data)
    edit(data["postprocess"])
    errors = _errors(data)
    assert any(w == where and says in m for w, m in errors), errors


@pytest.mark.parametrize(
    ("data", "edit", "says"),
    [
        (
            DENSE,
            lambda d: d["postprocess"].update(output="output1"),
            "postprocess.output 'output1' names an output that is not in outputs",
        ),
        # [B, 6, N] read as BNF: N features, not 4 + 2 classes.
        (
            DENSE,
            lambda d: d["postprocess"].update(layout="BNF"),
            "has 5376 features, but 4 box + 0 objectness",
        ),
        (DENSE, lambda d: d["postprocess"].update(objectness=True), "has 6 features"),
        (QUERIES, lambda d: d["postprocess"].update(activation="sigmoid"), "must be [B, Q, 2]"),
        (QUERIES, lambda d: d["postprocess"].update(boxes_output="nope"), "postprocess.boxes_output 'nope'"),
        (
            DETECTIONS,
            lambda d: d["postprocess"].update(num_detections_output="count"),
            "postprocess.num_detections_output 'count'",
        ),
    ],
)
def test_outputs_and_shapes_must_fit_the_postprocess(data: dict[str, Any], edit: Any, says: str) -> None:
    data = copy.deepcopy(data)
    edit(data)
    assert any(says in m for _, m in _errors(data)), _errors(data)


def test_sparse_ids_count_their_columns() -> None:
    # DETR on COCO-91: column = category id, then no-object.
    data = copy.deepcopy(QUERIES)
    data["postprocess"]["label_map"] = {"mode": "category_id"}
    data["outputs"][0]["shape"] = [-1, 300, 5]  # ids up to 3 -> columns 0..3, + no-object
    assert Contract.model_validate(data).postprocess.label_map.mode == "category_id"  # type: ignore[union-attr]


def test_input_options_are_refused_by_name() -> None:
    data = copy.deepcopy(DENSE)
    data["input"]["color"] = "GRB"
    assert _errors(data)[0][0] == "input.color"
    data = copy.deepcopy(DENSE)
    data["input"]["letterbox"] = {"placement": "bottom"}
    assert _errors(data)[0][0] == "input.letterbox.placement"
    data = copy.deepcopy(DETECTIONS)
    data["input"]["source_size"] = {"name": "sizes", "order": "xy"}
    assert _errors(data)[0][0] == "input.source_size.order"
    data = copy.deepcopy(DENSE)
    data["model_format"] = "tflite"
    assert _errors(data)[0][0] == "model_format"
    # A torch program is called with the image alone: the auxiliary size input is an ONNX graph's.
    data = copy.deepcopy(DETECTIONS)
    data.update(model_format="torch_export", model_file="model.pt2")
    ((where, why),) = _errors(data)
    assert "input.source_size is for model_format onnx" in why and "torch_export" in why, (where, why)
