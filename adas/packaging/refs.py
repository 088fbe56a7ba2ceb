"""Descriptors the packaging assets hand downstream (evaluation, simulation, registry)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from adas.cell import Cell
from adas.intake.contract import Contract
from adas.intake.refs import CandidateRef, StoredFile


def model_prefix(task: str, version: str) -> str:
    """The specification's layout: ``models/<task>/<version>/``."""
    return f"models/{task}/{version}"


class StagedRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    candidate: CandidateRef
    requirements_lock: StoredFile
    environment: StoredFile


class ExportRef(BaseModel):
    """The exported graph (ONNX opset 17, dynamic batch) and the torch program beside it."""

    model_config = ConfigDict(frozen=True)

    candidate: CandidateRef
    onnx: StoredFile
    torch_program: StoredFile
    coverage: StoredFile
    runtimes_supported: dict[str, bool]


class EngineRef(BaseModel):
    """An engine for one device x precision cell, as the packaging stage built it."""

    model_config = ConfigDict(frozen=True)

    device: str
    precision: str
    runtime: str
    candidate: CandidateRef
    engine: StoredFile
    calibration_cache: StoredFile | None = None
    build: dict[str, Any] = {}

    @property
    def contract(self) -> Contract:
        return self.candidate.contract

    @property
    def prefix(self) -> str:
        return Cell(self.device, self.precision).pack_prefix(self.contract.task, self.contract.version)


class TritonRepositoryRef(BaseModel):
    """A Triton model repository stored under ``<pack prefix>/triton/``."""

    model_config = ConfigDict(frozen=True)

    prefix: str
    serving: str
    ensemble: str
    files: dict[str, StoredFile]
    inference_config: StoredFile
    digest: str


class PackRef(BaseModel):
    """A complete, signed model pack; ``manifest`` lists every file with its sha256."""

    model_config = ConfigDict(frozen=True)

    engine: EngineRef
    prefix: str
    manifest: StoredFile
    files: dict[str, StoredFile]
    container_tag: str
    public_key: StoredFile


class OciLayerRef(BaseModel):
    """One layer of a published pack artifact: its file group, digest, size, whether this push sent it."""

    model_config = ConfigDict(frozen=True)

    group: str
    media_type: str
    digest: str
    size: int
    files: int
    uploaded: bool
    copies: int = 0  # files placed on pull from an earlier layer's identical file (the engine's copy)


class PublishedPackRef(BaseModel):
    """A pack cell published as an OCI artifact; ``reference`` (``host/repository@sha256:...``)
    is what names it immutably, ``tag`` only finds it."""

    model_config = ConfigDict(frozen=True)

    reference: str
    registry: str  # host[:port]
    repository: str
    tag: str
    digest: str
    device: str
    precision: str
    pack_prefix: str
    pack_manifest_sha256: str  # which stored pack these bytes are
    config_digest: str
    layers: list[OciLayerRef]
    blobs_pushed: int
    blobs_skipped: int  # already in the registry (HEAD answered): not sent again
    bytes_pushed: int
    bytes_skipped: int
    # The publication report's one line on the serving image (none built: why), and the W&B
    # artifact that carries this digest; empty when published without them (tests, benchmarks).
    serving_image: str = ""
    serving_image_reference: str | None = None  # host/repository@sha256:... where one was built
    wandb_artifact: str = ""

    @property
    def tagged(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"
