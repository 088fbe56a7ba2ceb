"""Test-only Triton python-backend model: the real ONNX Runtime engine step, slowed by a real
sleep per batch (``injected_delay_ms`` in its ``config.pbtxt``).

``tests/registry/test_local_canary.py`` puts this file in place of a candidate repository's
engine ``model.py`` (the original moved beside it as ``onnxruntime_engine.py``): the candidate
is then genuinely slower, in the step where a slower model would be, on a real server.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

# The python backend loads model.py by its path: put its folder on sys.path for the engine beside it.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from onnxruntime_engine import TritonPythonModel as OnnxRuntimeEngine


class TritonPythonModel(OnnxRuntimeEngine):
    def initialize(self, args: dict[str, Any]) -> None:
        super().initialize(args)
        params = json.loads(args["model_config"]).get("parameters", {})
        self.delay_s = float(params["injected_delay_ms"]["string_value"]) / 1000.0

    def execute(self, requests: list[Any]) -> list[Any]:
        time.sleep(self.delay_s)
        return super().execute(requests)
