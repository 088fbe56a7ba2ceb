"""Triton python-backend model: the engine's raw outputs -> padded boxes, scores, classes in
source-frame pixels, for every postprocess kind of the contract.

Copied verbatim into ``<model>_postprocess/<version>/model.py``. The decode is the vendored
``adas.detector.decoders`` package (next to this file, under ``adas/``), the very code offline
evaluation uses; the contract's ``postprocess`` (kind, tensor names, thresholds, NMS, label map),
its class ids and input size are ``config.pbtxt`` parameters, so the same repository is
re-configured, never code-edited. The preprocess step's ``geometry`` maps boxes back to each
frame's own pixels. The requests dynamic batching hands over together are decoded as one batch
(one decode call for the whole batch).
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The server's Python environment does not have the adas package: the vendored copy of the
# decoders sits next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from adas.detector.decoders import decode
from adas.detector.preprocess import Geometry

GEOMETRY = "geometry"
OUTPUTS = ("boxes", "scores", "classes", "num_detections")


def _namespace(value: Any) -> Any:
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_namespace(v) for v in value)
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.post = _namespace(json.loads(params["postprocess"]))
        self.class_ids = [int(c) for c in json.loads(params["class_ids"])]
        self.input_hw = tuple(int(v) for v in json.loads(params["input_hw"]))
        self.input_names = [i["name"] for i in config["input"] if i["name"] != GEOMETRY]
        # Batched (dynamic batching): several requests per execute(), decoded together. Unbatched
        # (a ragged engine: rows of the whole batch, not per image): one request at a time.
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def _inputs(self, request: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
        outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
        rows = pb_utils.get_input_tensor_by_name(request, GEOMETRY).as_numpy().reshape(-1, 6)
        return outputs, rows

    def _decode(self, outputs: dict[str, np.ndarray], rows: np.ndarray) -> list[np.ndarray]:
        """Padded boxes, scores, classes and counts of every image of ``outputs``."""
        geometries = [
            Geometry(
                (int(r[0]), int(r[1])), self.input_hw, (float(r[2]), float(r[3])), (int(r[4]), int(r[5]))
            )
            for r in rows.tolist()
        ]
        dets = decode(
            outputs,
            self.post,
            self.class_ids,
            geometry=geometries,
            input_hw=self.input_hw,
            batch_size=len(geometries),
        )
        k = int(self.post.max_detections)
        b = len(dets)
        # Fixed-size outputs (Triton shapes are static past the batch axis): zero padded past
        # num_detections.
        boxes = np.zeros((b, k, 4), np.float32)
        scores = np.zeros((b, k), np.float32)
        classes = np.zeros((b, k), np.int32)
        count = np.zeros((b,), np.int32)
        for i, d in enumerate(dets):
            n = min(len(d), k)
            boxes[i, :n] = d.boxes[:n]
            scores[i, :n] = d.scores[:n]
            classes[i, :n] = d.category_ids[:n]
            count[i] = n
        return [boxes, scores, classes, count]

    def _response(self, arrays: list[np.ndarray]) -> Any:
        return pb_utils.InferenceResponse(
            [pb_utils.Tensor(name, a) for name, a in zip(OUTPUTS, arrays, strict=True)]
        )

    def _run_alone(self, request: Any) -> Any:
        try:
            return self._response(self._decode(*self._inputs(request)))
        except Exception as exc:  # one bad request must not fail the others
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"postprocess: {exc}"))

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batched or len(requests) == 1:
            return [self._run_alone(r) for r in requests]
        # Dynamic batching hands over several requests: decode them as one batch, then cut the
        # padded arrays back into each request's images.
        try:
            inputs = [self._inputs(r) for r in requests]
            outputs = {n: np.concatenate([o[n] for o, _ in inputs]) for n in self.input_names}
            arrays = self._decode(outputs, np.concatenate([rows for _, rows in inputs]))
        except Exception:  # a bad request among them: each on its own, so it fails alone
            return [self._run_alone(r) for r in requests]
        responses, start = [], 0
        for _, rows in inputs:
            stop = start + len(rows)
            responses.append(self._response([a[start:stop] for a in arrays]))
            start = stop
        return responses
