"""Triton python-backend model: raw uint8 RGB frames [B, H, W, 3] -> the engine's input tensor.

Copied verbatim into ``<model>_preprocess/<version>/model.py`` by
``adas.packaging.triton_repository``. The normalization is read from the
``config.pbtxt`` parameters (``scale``, ``mean``, ``std``) so that a repository is configured,
never code-edited; the arithmetic is the vendored ``frame_preprocess.normalize``, the very
function offline evaluation uses, so served and offline inputs are bit-identical.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

# The server's Python environment does not have the adas_assets package: import the vendored
# copy that sits next to this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frame_preprocess import normalize

_NUMPY_DTYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16}


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        self.normalization = SimpleNamespace(
            scale=float(params["scale"]),
            mean=tuple(float(v) for v in json.loads(params["mean"])),
            std=tuple(float(v) for v in json.loads(params["std"])),
        )
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.output_dtype = _NUMPY_DTYPES[config["output"][0]["data_type"]]

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                frames = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy()
                x = normalize(frames, self.normalization).astype(self.output_dtype, copy=False)
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(self.output_name, x)]))
            except Exception as exc:  # one bad request must not fail the others in the batch
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(f"preprocess: {exc}")))
        return responses
