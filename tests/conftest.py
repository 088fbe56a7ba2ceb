"""Shared fixtures: every test gets its own ADAS_HOME and never touches the repo's .adas/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# Headless pygame for the simulator; set before anything imports it.
os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")
os.environ.setdefault("WANDB_MODE", "offline")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def adas_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "adas-home"
    monkeypatch.setenv("ADAS_HOME", str(home))
    from adas.settings import AdasHome

    AdasHome(home).ensure()
    return home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto in server mode) on localhost."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3_env(moto_s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_s3_endpoint


@pytest.fixture(scope="session")
def bundle_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A contract-conforming bundle with an untrained detector (exported once per session)."""
    import torch

    from adas.detector.bundle import write_bundle
    from adas.detector.model import CenterNet
    from adas.intake.contract import Lineage, Normalization

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
    """Copy the template bundle to ``dest`` (default: a fresh folder) and return its path.

    Files get fresh mtimes, like a bundle just dropped: the inbox waits for a bundle to settle,
    and the session's template may be minutes old by the time a test copies it."""

    def _make(dest: Path | None = None, name: str = "bundle") -> Path:
        target = dest / name if dest is not None else tmp_path / name
        shutil.copytree(bundle_template, target, copy_function=shutil.copy)
        return target

    return _make
