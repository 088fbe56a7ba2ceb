"""Typed descriptors that intake assets hand downstream (through the JSON IO manager)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from adas.intake.contract import Contract, Lineage


class StoredFile(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    uri: str
    sha256: str
    size: int


class CandidateRef(BaseModel):
    """A candidate bundle as stored in the artifact store: every file with its sha256."""

    model_config = ConfigDict(frozen=True)

    bundle_sha256: str
    prefix: str
    files: dict[str, StoredFile]
    contract: Contract
    lineage: Lineage
    parameter_count: int
    received_at: str
    source: str

    @property
    def version(self) -> str:
        return self.contract.version

    @property
    def short_sha(self) -> str:
        return self.bundle_sha256[:12]

    @property
    def model(self) -> StoredFile:
        return self.files[self.contract.model_file]


class DatasetRef(BaseModel):
    """A generated drive dataset in the artifact store (frames + COCO manifests)."""

    model_config = ConfigDict(frozen=True)

    tag: str
    prefix: str
    size: str
    config_hash: str
    frame_size: list[int]
    counts: dict[str, int]
    manifests: dict[str, StoredFile]
    file_count: int


class SliceCatalogRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset_tag: str
    slices_file: StoredFile
    critical: list[str]
    counts: dict[str, dict[str, int]]


class CalibrationShardRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset_tag: str
    split: str
    shard: StoredFile
    image_ids: list[int]
    per_stratum: dict[str, int]


class ReplayBundleRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    dataset_tag: str
    manifest: StoredFile
    sequences: list[dict[str, str | int | float]]
