"""Typed records of the registry: entries (immutable), events (append-only), aliases."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from adas.cell import Cell

ALIASES: tuple[str, ...] = ("staging", "candidate", "production", "rollback")
ROLES: tuple[str, ...] = ("technical", "safety", "security", "product")
Alias = Literal["staging", "candidate", "production", "rollback"]
Role = Literal["technical", "safety", "security", "product"]

_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")


class RegistryError(RuntimeError):
    """Base class of registry failures; messages say what to do next."""


def semver_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key of a semantic version: a pre-release sorts before its release (SemVer 2 §11,
    pre-release identifiers compared as one string, good enough for ``-rc.N`` style tags)."""
    m = _SEMVER.match(version)
    if not m:
        raise ValueError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    major, minor, patch, pre = m.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def json_digest(obj: Any) -> str:
    """12 hex digits of the sha256 of ``obj`` as sorted JSON (suffix of idempotency keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Pointer(_Frozen):
    """An immutable pointer: where a file is and the sha256 it must hash to."""

    key: str
    uri: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class _LaterFields(_Frozen):
    """A record that gained fields after entries were first registered: a field of
    ``ADDED_LATER`` left empty is not serialized, so entries registered before it existed
    serialize exactly as they did and their digests still verify."""

    ADDED_LATER: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_empty_later_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name in self.ADDED_LATER:
            if data.get(name) in (None, [], {}, ""):
                data.pop(name, None)
        return data


class EntryPointers(_LaterFields):
    ADDED_LATER: ClassVar[tuple[str, ...]] = ("oci_reference", "oci_tag", "serving_image")

    pack_prefix: str
    pack_uri: str
    manifest: Pointer | None
    artifacts: dict[str, Pointer]
    public_key_sha256: str | None = None
    wandb_artifact: str | None = None
    container_tag: str | None = None
    container_context_sha256: str | None = None
    git_sha: str
    dataset_tag: str
    training_run_id: str
    bundle_sha256: str
    # The pack as an OCI artifact: ``host/repository@sha256:...`` (what is deployed) and the tag
    # it was pushed under (``host/repository:tag``; a tag can be moved, the digest cannot).
    oci_reference: str | None = None
    oci_tag: str | None = None
    # The serving image (Triton base + this pack's model repository), by digest, where one was built.
    serving_image: str | None = None

    def without_oci(self) -> EntryPointers:
        return self.model_copy(update={"oci_reference": None, "oci_tag": None, "serving_image": None})


class SliceRow(_LaterFields):
    ADDED_LATER: ClassVar[tuple[str, ...]] = ("delta_interval",)

    slice: str
    AP: float | None
    production_AP: float | None = None
    delta_points: float | None = None
    images: int
    critical: bool = False
    delta_interval: str | None = None  # ``point [low, high] (n = ...)`` in AP points, paired


class Performance(_LaterFields):
    ADDED_LATER: ClassVar[tuple[str, ...]] = ("delta_intervals",)

    AP: float | None = None
    AP50: float | None = None
    per_class_AP: dict[str, float | None] = {}
    ece: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    latency_source: str | None = None
    production_version: str | None = None
    production_AP: float | None = None
    eval_frames: int | None = None
    eval_dataset_tag: str | None = None
    # Paired deltas vs production, ``point [low, high] (n = ...)`` in points: AP, AP50, weighted AP...
    delta_intervals: dict[str, str] = {}


class Verdict(_LaterFields):
    """A gate verdict as the registry records it (evaluation or simulation).

    ``amber``: the undecided deltas, each quoted as ``scope metric point [low, high] (n = ...)``;
    an approval must quote every one of them to accept an amber verdict."""

    ADDED_LATER: ClassVar[tuple[str, ...]] = ("amber",)

    kind: Literal["evaluation", "simulation"]
    passed: bool
    version: str
    device: str
    precision: str
    rationale: str
    failing: list[str] = []
    report: Pointer | None = None
    amber: list[str] = []

    @property
    def status(self) -> str:
        if self.passed:
            return "green"
        return "amber" if self.amber and not self.failing else "red"


class Security(_Frozen):
    sbom: Pointer | None = None
    vulnerability_status: str | None = None
    vulnerability_counts: dict[str, int] = {}
    vulnerability_reason: str | None = None
    licenses_passed: bool | None = None


class EntryBody(_Frozen):
    """Everything an entry says; its sha256 (:meth:`digest`) is what makes it immutable."""

    schema_version: Literal[1] = 1
    model_name: str
    task: str
    version: str
    device: str
    precision: str
    runtime: str
    classes: list[str]
    pointers: EntryPointers
    performance: Performance
    slices: list[SliceRow] = []
    latency_budget_ms: dict[str, float] = {}
    supported_targets: list[str] = []
    calibration_cache_version: str | None = None
    evaluation: Verdict | None = None
    simulation: Verdict | None = None
    security: Security = Security()
    reports: dict[str, Pointer] = {}
    # True for the model that was in production before the registry knew it: adopted as is
    # (no signed pack, no governance), so that the first canary has a production arm.
    adopted: bool = False

    @field_validator("version")
    @classmethod
    def _semver(cls, v: str) -> str:
        semver_key(v)
        return v

    @property
    def target(self) -> str:
        return Cell(self.device, self.precision).target_name

    def digest(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()


class Entry(_Frozen):
    id: int
    created_at: datetime
    created_by: str
    digest: str
    body: EntryBody
    model_card: str

    @property
    def version(self) -> str:
        return self.body.version

    @property
    def target(self) -> str:
        return self.body.target

    @property
    def ref(self) -> str:
        """``model@version for device/precision``: how people name an entry."""
        return f"{self.body.model_name}@{self.body.version} for {self.target}"


def registry_prefix(entry: Entry) -> str:
    """Where the registry keeps an entry's own documents (model card, access policy) in the
    artifact store."""
    b = entry.body
    return f"registry/{b.model_name}/{b.version}/{b.device}/{b.precision}"


class Event(_Frozen):
    id: int
    uid: str
    idempotency_key: str
    kind: str
    target: str | None
    alias: str | None
    entry_id: int | None
    from_entry_id: int | None
    to_entry_id: int | None
    promotion_id: str | None
    actor: str
    reason: str
    at: datetime
    payload: dict[str, Any]

    def as_webhook_body(self) -> dict[str, Any]:
        return {"type": f"registry.{self.kind}", **self.model_dump(mode="json")}


class AliasState(_Frozen):
    target: str
    alias: str
    entry_id: int | None
    event_id: int


class TargetState(_Frozen):
    """The optimistic-concurrency token of a target and the promotion holding it, if any."""

    target: str
    version: int
    active_promotion: str | None
    event_id: int | None


class History(_Frozen):
    """Moves of one alias of one target up to ``at`` (all of them when ``at`` is None)."""

    target: str
    alias: str
    at: datetime | None
    changes: list[Event]
    current: Entry | None

    @property
    def version(self) -> str | None:
        return self.current.version if self.current else None


class RegistryEntryRef(_Frozen):
    """What the ``registry_entry`` asset hands downstream: which entry, in which registry."""

    entry_id: int
    model_name: str
    version: str
    target: str
    digest: str
    created: bool
    registry: str
    model_card_uri: str | None = None
    adopted_production_entry: int | None = None


class AliasRef(_Frozen):
    """What the ``production_alias`` asset records: the target's aliases after the action."""

    target: str
    action: str
    outcome: str
    production_version: str | None
    production_entry: int | None
    rollback_version: str | None
    promotion_id: str | None = None
    message: str = ""
