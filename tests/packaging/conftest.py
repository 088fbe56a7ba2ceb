"""One untrained bundle, its contract and its ONNX export, shared by the packaging tests."""

from pathlib import Path

import pytest

from adas.intake.contract import Contract
from adas.packaging.export import ExportResult


@pytest.fixture(scope="session")
def bundle(bundle_template: Path) -> Path:
    return bundle_template


@pytest.fixture(scope="session")
def contract(bundle: Path) -> Contract:
    from adas.detector.bundle import read_contract

    return read_contract(bundle)


@pytest.fixture(scope="session")
def exported(bundle: Path, contract: Contract, tmp_path_factory: pytest.TempPathFactory) -> ExportResult:
    """The bundle exported the way packaging exports a candidate: in the sandbox."""
    from adas.packaging.sandboxed_model import export_in_sandbox

    return export_in_sandbox(bundle, contract, tmp_path_factory.mktemp("onnx") / "model.onnx")


@pytest.fixture(scope="session")
def onnx_path(exported: ExportResult) -> Path:
    return exported.path
