"""Triton python-backend model: CenterNet head outputs -> padded boxes, scores, classes.

Copied verbatim into ``<model>_postprocess/<version>/model.py``. The decode + NMS is the
vendored ``centernet_postprocess.decode`` (next to this file), the very function offline
evaluation uses. Thresholds, stride, output names and the class map come from the
``config.pbtxt`` parameters, so the same repository is re-configured, never code-edited.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The server's Python environment does not have the adas_assets package.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from centernet_postprocess import decode


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.post = SimpleNamespace(
            stride=int(params["stride"]),
            heatmap_output=params["heatmap_output"],
            size_output=params["size_output"],
            offset_output=params["offset_output"],
            score_threshold=float(params["score_threshold"]),
            nms_iou_threshold=float(params["nms_iou_threshold"]),
            max_detections=int(params["max_detections"]),
        )
        self.class_ids = [int(c) for c in json.loads(params["class_ids"])]
        self.input_names = [i["name"] for i in config["input"]]

    def _run(self, request: Any) -> Any:
        outputs = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}
        dets = decode(outputs, self.post, self.class_ids)
        k = self.post.max_detections
        b = len(dets)
        # Fixed-size outputs (Triton shapes are static past the batch axis): zero padded past
        # num_detections.
        boxes = np.zeros((b, k, 4), np.float32)
        scores = np.zeros((b, k), np.float32)
        classes = np.zeros((b, k), np.int32)
        count = np.zeros((b,), np.int32)
        for i, d in enumerate(dets):
            n = len(d)
            boxes[i, :n] = d.boxes
            scores[i, :n] = d.scores
            classes[i, :n] = d.category_ids
            count[i] = n
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor("boxes", boxes),
                pb_utils.Tensor("scores", scores),
                pb_utils.Tensor("classes", classes),
                pb_utils.Tensor("num_detections", count),
            ]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except Exception as exc:  # one bad request must not fail the others
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(f"postprocess: {exc}"))
                )
        return responses
