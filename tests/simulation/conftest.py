"""Fixtures for the simulation tests: configs, a real ONNX Runtime engine, tiny replay data."""

from __future__ import annotations

from pathlib import Path

import pytest

from adas.datasets.config import DatagenConfig, load_datagen_config
from adas.intake.contract import Contract, Normalization
from adas.settings import DEMO_BUNDLES_DIR
from adas.simulation.config import SimulationConfig, load_simulation_config


@pytest.fixture(scope="session")
def sim_cfg() -> SimulationConfig:
    return load_simulation_config()


@pytest.fixture(scope="session")
def datagen() -> DatagenConfig:
    return load_datagen_config()


def _export(module, contract: Contract, out: Path) -> Path:  # type: ignore[no-untyped-def]
    from adas.packaging.export import export_onnx

    export_onnx(module, contract, out)
    return out


@pytest.fixture(scope="session")
def plumbing_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Contract]:
    """An untrained CenterNet exported to ONNX: real engine plumbing, meaningless detections."""
    import torch

    from adas.detector.bundle import build_contract
    from adas.detector.model import build_model

    torch.manual_seed(0)
    contract = build_contract(
        version="0.0.1",
        model_name="plumbing",
        task="detection-2d",
        normalization=Normalization(scale=1 / 255, mean=(0.4, 0.4, 0.4), std=(0.25, 0.25, 0.25)),
    )
    path = _export(build_model().eval(), contract, tmp_path_factory.mktemp("engine") / "model.onnx")
    return path, contract


@pytest.fixture(scope="session")
def trained_engine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Contract] | None:
    """The shipped demo candidate as an ONNX Runtime engine, or None while it is not in the repo."""
    bundle = DEMO_BUNDLES_DIR / "candidate"
    if not (bundle / "contract.yaml").is_file():
        return None
    from adas.detector.bundle import load_bundle_model, read_contract

    contract = read_contract(bundle)
    path = _export(load_bundle_model(bundle), contract, tmp_path_factory.mktemp("trained") / "model.onnx")
    return path, contract
