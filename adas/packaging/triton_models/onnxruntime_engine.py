"""Triton python-backend model: runs ``model.onnx`` (next to this file) with ONNX Runtime on CPU.

The locally installable Triton (PyPI ``nvidia-pytriton``) ships only the python backend, so the
CPU smoke repository runs the engine through this stand-in for the ``onnxruntime_onnx``
platform. Tensor names come from ``config.pbtxt`` (every input: the image, and a source-size
input when the contract declares one); ``intra_op_threads`` from its parameters.
Copied verbatim into ``<model>_engine/<version>/model.py``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        here = os.path.dirname(os.path.abspath(__file__))
        options = ort.SessionOptions()
        # Few cores and several processes (server, stubs, clients): spinning worker threads would
        # fight over them between calls, so keep the pool small and passive.
        options.intra_op_num_threads = int(params.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            os.path.join(here, params.get("model_file", "model.onnx")),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )
        self.input_names = [i["name"] for i in config["input"]]
        self.output_names = [o["name"] for o in config["output"]]
        # An unbatched engine (a ragged kind: rows of the whole batch, not per image) answers each
        # request on its own; its outputs cannot be cut back into requests by image.
        self.batched = int(config.get("max_batch_size", 0)) > 0

    def _feeds(self, request: Any) -> dict[str, np.ndarray]:
        return {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy() for n in self.input_names}

    def _run_alone(self, request: Any) -> Any:
        try:
            outputs = self.session.run(self.output_names, self._feeds(request))
        except Exception as exc:
            return pb_utils.InferenceResponse(error=pb_utils.TritonError(f"onnxruntime engine: {exc}"))
        return pb_utils.InferenceResponse(
            [
                pb_utils.Tensor(n, np.ascontiguousarray(o))
                for n, o in zip(self.output_names, outputs, strict=True)
            ]
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        if not self.batched:
            return [self._run_alone(r) for r in requests]
        # Dynamic batching hands over several requests at once: run them as one batch.
        feeds = [self._feeds(r) for r in requests]
        sizes = [f[self.input_names[0]].shape[0] for f in feeds]
        try:
            batch = {n: np.concatenate([f[n] for f in feeds]) for n in self.input_names}
            outputs = self.session.run(self.output_names, batch)
        except Exception as exc:
            error = pb_utils.TritonError(f"onnxruntime engine: {exc}")
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses, start = [], 0
        for size in sizes:
            stop = start + size
            tensors = [
                pb_utils.Tensor(name, np.ascontiguousarray(out[start:stop]))
                for name, out in zip(self.output_names, outputs, strict=True)
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
            start = stop
        return responses
