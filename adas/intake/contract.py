"""The checkpoint bundle contract: what a candidate detector bundle must declare.

A bundle is a directory holding the model file, ``contract.yaml`` and ``lineage.json``.
These pydantic models are the single definition of both files; the trainer writes them and
intake validates them, so a field renamed here is renamed everywhere.

Schema version 2 describes detectors of other families: ``input`` says how a frame becomes the
model's tensor (stretch or letterbox, channel order, normalization, an optional auxiliary input
carrying the source size) and ``postprocess.kind`` names the output kind (``heatmap``,
``dense``, ``queries``, ``detections``, ``ragged``; see ``adas.detector.decoders``). Version 1
contracts (CenterNet only, ``postprocess.type: centernet``) are upgraded on read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adas.intake.labels import label_columns

CONTRACT_FILE = "contract.yaml"
LINEAGE_FILE = "lineage.json"
SCHEMA_VERSION = 2

# Full matches only (``$`` would accept a trailing newline), bounded lengths.
_SEMVER = re.compile(
    r"(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})(?:-[0-9A-Za-z.-]{1,32})?(?:\+[0-9A-Za-z.-]{1,32})?"
)
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_FILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_DIM = 16384
MAX_CLASS_ID = 100_000


def version_identity(version: str) -> str:
    """The version without build metadata: ``1.3.0+rebuild`` is the same version as ``1.3.0``."""
    return version.split("+", 1)[0]


class _Strict(BaseModel):
    # NaN and infinity are never valid in a contract (normalization, thresholds).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Normalization(_Strict):
    """``x = (pixel * scale - mean[c]) / std[c]``, channels in the model's order (``input.color``)."""

    scale: float = Field(gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @field_validator("std")
    @classmethod
    def _positive_std(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(s <= 0 for s in v):
            raise ValueError("every std must be > 0")
        return v


class TensorSpec(_Strict):
    """A named tensor; ``-1`` in ``shape`` marks a dynamic axis (the batch)."""

    name: str = Field(min_length=1, max_length=128)
    shape: list[int] = Field(min_length=1, max_length=8)
    dtype: Literal["float32", "float16", "uint8", "int32", "int64"]

    @field_validator("shape")
    @classmethod
    def _dims(cls, v: list[int]) -> list[int]:
        if any(d == 0 or d < -1 for d in v):
            raise ValueError("dimensions must be positive, or -1 for a dynamic axis")
        if any(d > MAX_DIM for d in v):
            raise ValueError(f"dimensions must be at most {MAX_DIM}")
        return v


class Letterbox(_Strict):
    """Aspect-preserving resize into the input, the rest filled with ``pad_value``: ``center``
    splits the padding on both sides (YOLOv5/v8), ``top_left`` pads right and bottom (YOLOX)."""

    placement: Literal["center", "top_left"] = "center"
    pad_value: int = Field(default=114, ge=0, le=255)


class SourceSizeInput(_Strict):
    """An auxiliary model input carrying each frame's source size, ``[B, 2]`` in ``order``
    (RT-DETR's ``orig_target_sizes`` is ``wh``, PaddleDetection's ``im_shape`` is ``hw``)."""

    name: str = Field(min_length=1, max_length=128)
    order: Literal["hw", "wh"]
    dtype: Literal["float32", "int32", "int64"] = "int64"


class InputSpec(TensorSpec):
    """The model's image tensor and how a source frame (uint8 RGB) becomes it.

    ``resize``: ``stretch`` (today's default) scales each axis to the input size; ``letterbox``
    keeps the aspect ratio and pads (``letterbox``). ``color`` is the channel order the model
    wants; frames are RGB and are reversed for ``BGR``.
    """

    dtype: Literal["float32", "float16", "uint8", "int64"]
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB", "BGR"] = "RGB"
    normalization: Normalization
    resize: Literal["stretch", "letterbox"] = "stretch"
    letterbox: Letterbox | None = None
    source_size: SourceSizeInput | None = None

    @model_validator(mode="before")
    @classmethod
    def _letterbox_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("resize") == "letterbox" and data.get("letterbox") is None:
            return {**data, "letterbox": {}}
        return data

    @model_validator(mode="after")
    def _letterbox_only_when_letterboxing(self) -> InputSpec:
        if self.resize == "stretch" and self.letterbox is not None:
            raise ValueError("input.letterbox applies only with resize: letterbox")
        if self.source_size is not None and self.source_size.name == self.name:
            raise ValueError(f"input.source_size.name {self.name!r} is the image input's own name")
        return self

    @property
    def height_width(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]


class OutputSpec(TensorSpec):
    description: str = ""


class ClassEntry(_Strict):
    """Model channel ``index`` predicts COCO category ``id`` named ``name``."""

    id: int = Field(ge=1, le=MAX_CLASS_ID)
    name: str = Field(min_length=1, max_length=64)


class LabelMap(_Strict):
    """How the model's class label (or class column) becomes a contract class.

    ``index``: label ``background_offset + k`` is ``classes[k]``; labels below the offset are
    background (torchvision: offset 1, label 0 = background). ``category_id``: the label is the
    category id itself, sparse ids with gaps (DETR's COCO-91). Labels naming no contract class
    are dropped.
    """

    mode: Literal["index", "category_id"] = "index"
    background_offset: int = Field(default=0, ge=0, le=MAX_CLASS_ID)

    @model_validator(mode="after")
    def _offset_is_for_indices(self) -> LabelMap:
        if self.mode == "category_id" and self.background_offset:
            raise ValueError("background_offset applies only to mode: index (category ids are absolute)")
        return self

    def label_columns(self, class_ids: list[int]) -> int:
        """How many class columns (or distinct labels) a model with these classes has."""
        return label_columns(self.mode, self.background_offset, class_ids)


class _Selection(_Strict):
    """Fields every kind has: the operating score threshold and the detections kept per image."""

    score_threshold: float = Field(ge=0, le=1)
    max_detections: int = Field(ge=1, le=1000)

    @property
    def type(self) -> str:
        """Schema v1's name of the kind (``centernet`` for ``heatmap``): inference_config.json
        and the intake presenter still show it."""
        kind = str(self.kind)  # every concrete kind declares it
        return "centernet" if kind == "heatmap" else kind

    def output_fields(self) -> dict[str, str]:
        """``{field: output name}`` of the model outputs this postprocess reads."""
        return {
            f: v
            for f in type(self).model_fields
            if (f == "output" or f.endswith("_output")) and isinstance(v := getattr(self, f), str)
        }


class _Nms(_Selection):
    nms: Literal["class_aware", "agnostic"] = "class_aware"
    nms_iou_threshold: float = Field(gt=0, le=1)
    pre_nms_top_k: int | None = Field(default=None, ge=1, le=100_000)


BoxEncoding = Literal["cxcywh", "xyxy"]
Coordinates = Literal["input_pixels", "source_pixels", "normalized"]
PackedColumn = Literal["x1", "y1", "x2", "y2", "score", "label", "batch_index"]
_BOX_AND_SCORE = ("x1", "y1", "x2", "y2", "score", "label")


class HeatmapPostprocess(_Selection):
    """CenterNet-style heatmap decode + class-wise NMS (``adas.detector.postprocess.decode``);
    heatmap channel ``k`` is ``classes[k]``. Schema v1 called it ``type: centernet``."""

    kind: Literal["heatmap", "centernet"] = "heatmap"
    stride: int = Field(ge=1, le=256)
    heatmap_output: str
    size_output: str
    offset_output: str
    nms_iou_threshold: float = Field(gt=0, le=1)

    @field_validator("kind")
    @classmethod
    def _alias(cls, v: str) -> str:
        return "heatmap"  # ``centernet`` (v1's name) is accepted as an alias of the same kind


class DensePostprocess(_Nms):
    """Candidates before NMS in one tensor, ``[B, N, F]`` (``BNF``) or ``[B, F, N]`` (``BFN``).

    Features: 4 box values (``box_encoding``, in ``coordinates``), then an objectness column when
    ``objectness``, then one score column per label (``label_map``). ``scores: logits`` applies a
    sigmoid to objectness and class columns; the score is objectness x class score.
    """

    kind: Literal["dense"]
    output: str
    layout: Literal["BNF", "BFN"]
    box_encoding: BoxEncoding = "cxcywh"
    coordinates: Literal["input_pixels", "normalized"] = "input_pixels"
    objectness: bool = False
    scores: Literal["probabilities", "logits"] = "probabilities"
    label_map: LabelMap = LabelMap()


class QueriesPostprocess(_Selection):
    """A set prediction (DETR, RT-DETR): class scores ``[B, Q, C]`` and normalized cxcywh boxes
    ``[B, Q, 4]``, or one ``[B, Q, 4 + C]`` tensor (boxes first) when ``boxes_output`` is unset.

    ``softmax``: the last class column is "no object"; each query keeps its best other class.
    ``sigmoid`` (logits) or ``none`` (probabilities): the top ``max_detections`` query x class
    pairs. No NMS: a set predictor emits one box per object.
    """

    kind: Literal["queries"]
    scores_output: str
    boxes_output: str | None = None
    activation: Literal["softmax", "sigmoid", "none"]
    label_map: LabelMap = LabelMap()


class _Rows(_Selection):
    """Detections as rows: one packed tensor whose last axis is ``columns``, or split tensors
    (``boxes_output`` xyxy, ``scores_output``, ``labels_output``)."""

    packed_output: str | None = None
    columns: tuple[PackedColumn, ...] = _BOX_AND_SCORE
    boxes_output: str | None = None
    scores_output: str | None = None
    labels_output: str | None = None
    coordinates: Coordinates = "input_pixels"
    label_map: LabelMap = LabelMap()

    @model_validator(mode="after")
    def _packed_or_split(self) -> _Rows:
        split = (self.boxes_output, self.scores_output, self.labels_output)
        if self.packed_output is None and None in split:
            raise ValueError(
                "set packed_output (one tensor, last axis = columns) or all of boxes_output, "
                "scores_output and labels_output"
            )
        if self.packed_output is not None and any(s is not None for s in split):
            raise ValueError("packed_output and boxes_output/scores_output/labels_output are exclusive")
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"columns repeat a name: {list(self.columns)}")
        missing = [c for c in _BOX_AND_SCORE if c not in self.columns]
        if missing:
            raise ValueError(f"columns lack {missing}")
        return self


class DetectionsPostprocess(_Rows):
    """The model decodes itself (NMS in the graph or a one-to-one head): a fixed ``K`` rows per
    image, ``[B, K, len(columns)]`` packed or ``[B, K, 4]`` / ``[B, K]`` / ``[B, K]`` split.

    ``padding`` says which rows are not detections: past ``num_detections_output`` (``[B]`` or
    ``[B, 1]``), score 0, or label -1. A given ``num_detections_output`` is always applied.
    """

    kind: Literal["detections"]
    num_detections_output: str | None = None
    padding: Literal["num_detections", "zero_score", "negative_label"]

    @model_validator(mode="after")
    def _count_given(self) -> DetectionsPostprocess:
        if "batch_index" in self.columns:
            raise ValueError("columns: batch_index belongs to kind ragged; detections rows are [B, K, F]")
        if self.padding == "num_detections" and self.num_detections_output is None:
            raise ValueError("padding: num_detections needs num_detections_output")
        return self


class RaggedPostprocess(_Rows):
    """A variable number of rows per image, flattened over the batch: ``[M, F]`` packed or
    ``[M, 4]`` / ``[M]`` / ``[M]`` split. Rows belong to images by ``count_output`` (``[B]``,
    rows in image order) or by a ``batch_index`` column (``batch_index_output`` when split)."""

    kind: Literal["ragged"]
    count_output: str | None = None
    batch_index_output: str | None = None

    @model_validator(mode="after")
    def _one_way_to_split(self) -> RaggedPostprocess:
        ways = [
            w
            for w, given in (
                ("count_output", self.count_output is not None),
                ("a batch_index column", "batch_index" in self.columns),
                ("batch_index_output", self.batch_index_output is not None),
            )
            if given
        ]
        if len(ways) != 1:
            raise ValueError(
                "rows must be assigned to images in exactly one way: count_output, a batch_index "
                f"column in columns, or batch_index_output (got {ways or 'none'})"
            )
        if self.batch_index_output is not None and self.packed_output is not None:
            raise ValueError(
                "batch_index_output goes with split tensors; packed rows take a batch_index column"
            )
        return self


POSTPROCESS_KINDS = ("heatmap", "centernet", "dense", "queries", "detections", "ragged")
Postprocess = Annotated[
    HeatmapPostprocess | DensePostprocess | QueriesPostprocess | DetectionsPostprocess | RaggedPostprocess,
    Field(discriminator="kind"),
]


def upgrade_contract(data: Mapping[str, Any]) -> dict[str, Any]:
    """A contract mapping of an older schema version as version 2 (a v2 mapping comes back as is).

    v1 (also a mapping without ``schema_version``, v1's default) differs only in
    ``postprocess``: ``type: centernet`` is ``kind: heatmap``.
    """
    data = dict(data)
    if data.get("schema_version", 1) != 1:
        return data
    data["schema_version"] = SCHEMA_VERSION
    post = data.get("postprocess")
    if isinstance(post, Mapping) and "kind" not in post:
        post = dict(post)
        post["kind"] = "heatmap" if post.get("type", "centernet") == "centernet" else post["type"]
        post.pop("type", None)
        data["postprocess"] = post
    return data


class Contract(_Strict):
    """``contract.yaml``: the inference contract of a candidate bundle."""

    schema_version: Literal[2] = SCHEMA_VERSION
    task: str
    model_name: str
    version: str
    model_file: str
    model_format: Literal["torch_export", "torchscript", "onnx"]
    input: InputSpec
    outputs: list[OutputSpec] = Field(min_length=1)
    classes: list[ClassEntry] = Field(min_length=1)
    postprocess: Postprocess
    quantization_aware: bool = False

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_contract(data) if isinstance(data, Mapping) else data

    @field_validator("task", "model_name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not _NAME.fullmatch(v):
            raise ValueError("must be 1-64 lowercase letters, digits and '-' (used in artifact paths)")
        return v

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        if not _SEMVER.fullmatch(v):
            raise ValueError(f"{v[:40]!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        return v

    @field_validator("model_file")
    @classmethod
    def _relative(cls, v: str) -> str:
        if not _FILE.fullmatch(v):
            raise ValueError("must be a plain file name inside the bundle (letters, digits, '_', '.', '-')")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Contract:
        if self.input.shape[0] != -1 or any(d == -1 for d in self.input.shape[1:]):
            raise ValueError("input.shape must have a dynamic batch (-1) first and fixed other axes")
        if len(self.input.shape) != 4:
            raise ValueError("input.shape must be [batch, channels, height, width]")
        if self.input.source_size is not None and self.model_format != "onnx":
            raise ValueError(
                f"input.source_size is for model_format onnx (an exported graph with a second input); "
                f"a {self.model_format} program is called with the image alone"
            )
        names = [o.name for o in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"outputs have duplicate names: {names}")
        for field, name in self.postprocess.output_fields().items():
            if name not in names:
                raise ValueError(
                    f"postprocess.{field} {name!r} names an output that is not in outputs: {names}"
                )
        ids = [c.id for c in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError(f"classes have duplicate ids: {ids}")
        post = self.postprocess
        if isinstance(post, HeatmapPostprocess):
            self._check_heatmap(post)
        elif isinstance(post, DensePostprocess):
            self._check_dense(post)
        elif isinstance(post, QueriesPostprocess):
            self._check_queries(post)
        return self

    def _output(self, name: str) -> OutputSpec:
        return next(o for o in self.outputs if o.name == name)

    def _check_heatmap(self, post: HeatmapPostprocess) -> None:
        heat = self._output(post.heatmap_output)
        if len(heat.shape) != 4 or heat.shape[1] != len(self.classes):
            raise ValueError(
                f"heatmap output {heat.name!r} must be [batch, {len(self.classes)} classes, h, w], got {heat.shape}"
            )
        stride = post.stride
        fixed = heat.shape[2] > 0 and heat.shape[3] > 0
        if fixed and (heat.shape[2] * stride, heat.shape[3] * stride) != tuple(self.input.shape[2:]):
            raise ValueError(
                f"postprocess.stride {stride} does not fit the shapes: heatmap {heat.shape[2]}x{heat.shape[3]} "
                f"x {stride} != input {self.input.shape[2]}x{self.input.shape[3]}"
            )

    def _check_dense(self, post: DensePostprocess) -> None:
        out = self._output(post.output)
        if len(out.shape) != 3:
            raise ValueError(
                f"postprocess.output {out.name!r} must be [B, N, F] or [B, F, N], got {out.shape}"
            )
        features = out.shape[2] if post.layout == "BNF" else out.shape[1]
        want = 4 + int(post.objectness) + post.label_map.label_columns([c.id for c in self.classes])
        if features != -1 and features != want:
            raise ValueError(
                f"postprocess.layout {post.layout}: output {out.name!r} {out.shape} has {features} features, "
                f"but 4 box + {int(post.objectness)} objectness + the class columns of {len(self.classes)} "
                f"classes (label_map) make {want}"
            )

    def _check_queries(self, post: QueriesPostprocess) -> None:
        scores = self._output(post.scores_output)
        want = post.label_map.label_columns([c.id for c in self.classes]) + int(post.activation == "softmax")
        want += 4 if post.boxes_output is None else 0
        if len(scores.shape) != 3 or scores.shape[2] not in (-1, want):
            raise ValueError(
                f"postprocess.scores_output {scores.name!r} must be [B, Q, {want}] for {len(self.classes)} "
                f"classes (label_map{', + no-object' if post.activation == 'softmax' else ''}"
                f"{', boxes first' if post.boxes_output is None else ''}), got {scores.shape}"
            )

    @property
    def version_identity(self) -> str:
        return version_identity(self.version)

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def class_ids(self) -> list[int]:
        return [c.id for c in self.classes]


def readable_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field path, message)`` per validation error of a contract (or any model).

    The discriminated union puts the kind into pydantic's path (``postprocess.dense.output``):
    the path a contract author wrote has no such level, so it is dropped; a missing or unknown
    kind is reported on ``postprocess.kind``.
    """
    readable = []
    for e in exc.errors():
        loc = [str(p) for p in e["loc"]]
        if len(loc) > 1 and loc[0] == "postprocess" and loc[1] in POSTPROCESS_KINDS:
            loc.pop(1)
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc.append(str(e.get("ctx", {}).get("discriminator", "kind")).strip("'"))
            msg = f"{msg} (kinds: {', '.join(k for k in POSTPROCESS_KINDS if k != 'centernet')})"
        readable.append((".".join(loc), msg))
    return readable


class Lineage(_Strict):
    """``lineage.json``: where the checkpoint came from."""

    model_config = ConfigDict(extra="allow", frozen=True)

    training_run_id: str = Field(min_length=1)
    dataset_tag: str = Field(min_length=1)
    git_sha: str

    @field_validator("git_sha")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{7,40}", v):  # fullmatch: no trailing newline
            raise ValueError("must be a git commit SHA (7-40 lowercase hex digits)")
        return v
