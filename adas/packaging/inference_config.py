"""``inference_config.json``: everything a serving client must know besides the weights.

Written next to every packaged engine and Triton repository so that a consumer (the vehicle
stack, the simulator, an integration test) never has to read Python to learn the input
layout, the normalization, the thresholds or the class map. Derived from the bundle contract
only: the contract is the source of truth, this file is its serving-side projection.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from adas.intake.contract import Contract

INFERENCE_CONFIG_FILE = "inference_config.json"
INFERENCE_CONFIG_SCHEMA_VERSION = 1
# Names of the raw-frame input and the decoded outputs of the served ensemble. Clients send
# frames and receive boxes, so these are the serving API (not the model's tensor names).
FRAMES_INPUT = "frames"
ENSEMBLE_OUTPUTS = ("boxes", "scores", "classes", "num_detections")
AUGMENTATIONS_NOTE = "disabled at inference (training-time flips and colour jitter are not applied)"


def _triton_dtype(dtype: str) -> str:
    return {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int64": "INT64", "int32": "INT32"}[dtype]


def build_inference_config(contract: Contract, device: str, precision: str, runtime: str) -> dict[str, Any]:
    """The JSON-ready inference config of ``contract`` served on ``device``/``precision``/``runtime``."""
    c = contract.input.shape[1]
    post = contract.postprocess
    k = post.max_detections
    norm = contract.input.normalization
    return {
        "schema_version": INFERENCE_CONFIG_SCHEMA_VERSION,
        "model_name": contract.model_name,
        "model_version": contract.version,
        "task": contract.task,
        "target": {"device": device, "precision": precision, "runtime": runtime},
        "input": {
            # What clients of the served ensemble send: raw RGB frames of any size, batch first
            # (one size per request); boxes come back in those frames' pixels.
            "raw_frames": {
                "name": FRAMES_INPUT,
                "dtype": "uint8",
                "triton_dtype": "UINT8",
                "shape": [-1, -1, -1, c],
                "layout": "NHWC",
                "color": "RGB",
            },
            # What the engine itself consumes, after preprocessing.
            "model_tensor": {
                "name": contract.input.name,
                "dtype": contract.input.dtype,
                "triton_dtype": _triton_dtype(contract.input.dtype),
                "shape": list(contract.input.shape),
                "layout": contract.input.layout,
                "color": contract.input.color,
            },
        },
        "preprocess": {
            "resize": contract.input.resize,
            "letterbox": None
            if contract.input.letterbox is None
            else contract.input.letterbox.model_dump(mode="json"),
            "source_size_input": None
            if contract.input.source_size is None
            else contract.input.source_size.model_dump(mode="json"),
        },
        "normalization": {
            "formula": "x = (pixel * scale - mean[c]) / std[c]",
            "scale": norm.scale,
            "mean": list(norm.mean),
            "std": list(norm.std),
        },
        "model_outputs": [
            {
                "name": o.name,
                "dtype": o.dtype,
                "triton_dtype": _triton_dtype(o.dtype),
                "shape": list(o.shape),
                "description": o.description,
            }
            for o in contract.outputs
        ],
        "outputs": [
            {
                "name": "boxes",
                "dtype": "float32",
                "triton_dtype": "FP32",
                "shape": [-1, k, 4],
                "description": "xyxy in the sent frame's pixels, padded with zeros past num_detections",
            },
            {
                "name": "scores",
                "dtype": "float32",
                "triton_dtype": "FP32",
                "shape": [-1, k],
                "description": "in [0, 1], descending; zero padded",
            },
            {
                "name": "classes",
                "dtype": "int32",
                "triton_dtype": "INT32",
                "shape": [-1, k],
                "description": "COCO category ids (see class_map); zero padded",
            },
            {
                "name": "num_detections",
                "dtype": "int32",
                "triton_dtype": "INT32",
                "shape": [-1],
                "description": "valid rows of boxes/scores/classes per frame",
            },
        ],
        # The contract's postprocess as written (kind, tensors, thresholds, NMS, label map), plus
        # schema v1's ``type`` name that older readers look for.
        "postprocess": {"type": post.type, **post.model_dump(mode="json")},
        "class_map": [
            {"index": i, "category_id": cls.id, "name": cls.name} for i, cls in enumerate(contract.classes)
        ],
        "augmentations": AUGMENTATIONS_NOTE,
    }


def write_json_atomic(path: Path, payload: Any) -> Path:
    """Write JSON so that readers never see a half-written file (temp file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_inference_config(
    path: str | Path, contract: Contract, device: str, precision: str, runtime: str
) -> Path:
    """Write ``build_inference_config(...)`` to ``path`` (a file, or a directory to hold
    ``inference_config.json``) atomically; returns the file path."""
    p = Path(path)
    if p.is_dir():
        p = p / INFERENCE_CONFIG_FILE
    return write_json_atomic(p, build_inference_config(contract, device, precision, runtime))


def read_inference_config(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        p = p / INFERENCE_CONFIG_FILE
    return json.loads(p.read_text())
