import shutil
from pathlib import Path

import pytest
import torch

from adas_assets.intake.contract import Lineage, Normalization


@pytest.fixture(scope="session")
def bundle_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract-conforming bundle with an untrained detector (exported once per session)."""
    from adas_assets.detector.bundle import write_bundle
    from adas_assets.detector.model import CenterNet

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("bundles") / "template"
    write_bundle(
        CenterNet().eval(),
        out,
        version="0.1.0",
        model_name="test-detector",
        task="vehicle-detection-2d",
        lineage=Lineage(training_run_id="test-run", dataset_tag="sim-test", git_sha="abcdef0"),
        normalization=Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
    )
    return out


@pytest.fixture
def make_bundle(bundle_template: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Copy the template bundle to ``dest`` (default: a fresh folder) and return its path."""

    def _make(dest: Path | None = None, name: str = "bundle") -> Path:
        target = dest / name if dest is not None else tmp_path / name
        shutil.copytree(bundle_template, target)
        return target

    return _make
