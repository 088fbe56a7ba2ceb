"""Triton python-backend model: raw uint8 RGB frames [B, h, w, 3] -> the engine's input tensor(s)
and each frame's placement (``geometry``), for any source size.

Copied verbatim into ``<model>_preprocess/<version>/model.py`` by
``adas.packaging.triton_repository``. The contract's ``input`` (resize: stretch or letterbox,
colour order, normalization, the optional source-size input) is the ``input_spec`` parameter of
``config.pbtxt``, so a repository is configured, never code-edited; the arithmetic is the vendored
``frame_preprocess.preprocess``, the very function offline evaluation uses, and the engine's
inputs come from the vendored ``model_feeds.model_feeds``, as offline runners feed them, so served
and offline inputs are bit-identical. ``geometry`` rows are ``source_h, source_w, scale_x, scale_y, pad_x,
pad_y``: what the postprocess needs to map boxes back to source pixels.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The server's Python environment does not have the adas package: import the vendored copy
# that sits next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frame_preprocess import preprocess
from model_feeds import model_feeds

_NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}
GEOMETRY = "geometry"


def _namespace(value: Any) -> Any:
    """JSON objects as attribute namespaces (what the vendored functions read), lists as tuples."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _namespace(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_namespace(v) for v in value)
    return value


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.spec = _namespace(json.loads(params["input_spec"]))
        self.input_name = config["input"][0]["name"]
        outputs = {o["name"]: o for o in config["output"]}
        self.output_name = self.spec.name
        self.output_dtype = _NUMPY_DTYPES[outputs[self.output_name]["data_type"]]

    def _run(self, request: Any) -> Any:
        frames = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
        x, geometry = preprocess(frames, self.spec)
        row = [*geometry.source_hw, *geometry.scale_xy, *geometry.pad_xy]
        rows = np.tile(np.asarray(row, np.float32), (len(x), 1))
        feeds = model_feeds(self.spec, x, geometry.source_hw)
        feeds[self.output_name] = feeds[self.output_name].astype(self.output_dtype, copy=False)
        tensors = [pb_utils.Tensor(name, value) for name, value in feeds.items()]
        return pb_utils.InferenceResponse([*tensors, pb_utils.Tensor(GEOMETRY, rows)])

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._run(request))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocess: {exc}")))
        return responses
