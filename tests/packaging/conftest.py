"""Shared by the packaging tests: one untrained bundle, its contract and its ONNX export; a
real OCI registry per test (Debian's docker-registry on loopback), its client, a local store."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from adas.intake.contract import Contract
from adas.packaging.export import ExportResult
from adas.packaging.local_oci_registry import LocalOciRegistry
from adas.packaging.oci_client import RegistryClient
from adas.storage import LocalArtifactStore


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


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalOciRegistry]:
    with LocalOciRegistry(tmp_path / "oci-registry") as reg:
        yield reg


@pytest.fixture
def client(registry: LocalOciRegistry) -> RegistryClient:
    return RegistryClient(registry.url)


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "artifacts")
