"""Fixtures for the evaluation tests: ONNX engines from untrained detectors, synthetic data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from adas.intake.contract import Contract

from .stubs import NORMALIZATION


@dataclass(frozen=True)
class ExportedEngine:
    path: Path
    contract: Contract


def _export(out: Path, version: str, seed: int, heatmap_bias: float | None) -> ExportedEngine:
    import torch

    from adas.detector.bundle import build_contract
    from adas.detector.model import CenterNet
    from adas.packaging.export import export_onnx

    torch.manual_seed(seed)
    model = CenterNet().eval()
    if heatmap_bias is not None:
        # The heatmap head's last conv, whatever the head's structure.
        convs = [m for m in model.heatmap.modules() if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            convs[-1].bias.fill_(heatmap_bias)
    contract = build_contract(
        version=version, model_name="test-detector", task="vehicle-detection-2d", normalization=NORMALIZATION
    )
    path = out / f"model-{version}.onnx"
    export_onnx(model, contract, path)
    return ExportedEngine(path, contract)


@pytest.fixture(scope="session")
def onnx_engines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportedEngine]:
    """``noisy``: an untrained CenterNet (every cell ~0.1: up to 100 low-score detections per
    frame); ``silent``: the same with its heatmap bias at -8 (no detection above 0.05)."""
    out = tmp_path_factory.mktemp("onnx")
    return {
        "noisy": _export(out, "0.2.0", 0, None),
        "silent": _export(out, "0.1.0", 1, -8.0),
    }
