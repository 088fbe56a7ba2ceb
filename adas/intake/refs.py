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
    """A generated drive dataset in the artifact store (frames + COCO manifests).

    Manifests name frames by file name; ``file_index`` pins every file of the dataset (name ->
    sha256, size), so a frame is read against the hash recorded when the dataset was stored
    (``adas.intake.stored.DatasetFiles``). Values stored before the index existed decode with
    ``file_index=None``; their frames are refused until golden_dataset is re-materialized."""

    model_config = ConfigDict(frozen=True)

    tag: str
    prefix: str
    size: str
    config_hash: str
    frame_size: list[int]
    counts: dict[str, int]
    manifests: dict[str, StoredFile]
    file_count: int
    file_index: StoredFile | None = None


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
    """The replay sequences of a dataset; ``file_index`` is the dataset's (frames are read
    against it, see :class:`DatasetRef`), None in values stored before it existed."""

    model_config = ConfigDict(frozen=True)

    dataset_tag: str
    manifest: StoredFile
    sequences: list[dict[str, str | int | float]]
    file_index: StoredFile | None = None
