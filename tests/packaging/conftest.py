"""One untrained bundle, its contract and its ONNX export, shared by the packaging tests."""

from pathlib import Path

import pytest

from adas.intake.contract import Contract


@pytest.fixture(scope="session")
def bundle(bundle_template: Path) -> Path:
    return bundle_template


@pytest.fixture(scope="session")
def contract(bundle: Path) -> Contract:
    from adas.detector.bundle import read_contract

    return read_contract(bundle)


@pytest.fixture(scope="session")
def onnx_path(bundle: Path, contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from adas.detector.bundle import load_bundle_model
    from adas.packaging.export import export_onnx

    return export_onnx(
        load_bundle_model(bundle), contract, tmp_path_factory.mktemp("onnx") / "model.onnx"
    ).path
