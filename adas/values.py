"""Stored asset values: small typed descriptors kept as JSON in the artifact store.

Assets hand each other descriptors (a candidate's URIs and hashes, a dataset's manifest keys),
never large binaries. A stored record names the pydantic model class of its value, so a reader
gets the same typed object back. This module is the one codec of those records; the Dagster IO
manager (``resources.io_manager``) and Dagster-free readers (the registry CLI) both use it.

Only model classes from the core (modules under ``adas.``) are written or read back: a record is
data, and decoding must never import whatever module a file names. Records written before the
core moved out of the Dagster layer name ``adas_assets.<module>``; they are read as
``adas.<module>``.

A stored value is read against a :class:`ValuePin`: the sha256 recorded when it was written
(``value_sha256`` in the upstream materialization), never only against the store's sidecar,
which sits beside the bytes and can be rewritten with them. The pin's origin is noted for every
file the value describes, so a later mismatching read of one of them names the run that pinned it.
"""

import importlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from adas.storage import ArtifactStore, note_pin_origin

VALUES_PREFIX = "asset-values"
CORE_PACKAGE = "adas"
LEGACY_PACKAGE = "adas_assets"


class StoredValueError(ValueError):
    """A stored value names a class that may not (or can no longer) be loaded."""


def stored_value_key(asset_path: Sequence[str], partition_path: str | None = None) -> str:
    """Store key of an asset's value: ``asset-values/<asset path>/value.json`` unpartitioned,
    ``asset-values/<asset path>/<partition path>.json`` for one partition."""
    base = f"{VALUES_PREFIX}/" + "/".join(asset_path)
    return f"{base}/value.json" if partition_path is None else f"{base}/{partition_path}.json"


def _core_module(module: str) -> str:
    """``module`` as a core module name (legacy ``adas_assets.x`` -> ``adas.x``), or refuse."""
    head, _, rest = module.partition(".")
    if head == LEGACY_PACKAGE and rest:
        module = f"{CORE_PACKAGE}.{rest}"
    if module.partition(".")[0] != CORE_PACKAGE:
        raise StoredValueError(
            f"{module!r} is not a module of the core ({CORE_PACKAGE}.*): stored values are core "
            "models only, so it is neither written nor imported"
        )
    return module


def model_path(cls: type[BaseModel]) -> str:
    """``module:QualName`` of a core model class (what a stored record names)."""
    return f"{_core_module(cls.__module__)}:{cls.__qualname__}"


def model_class(path: str) -> type[BaseModel]:
    """The pydantic model class a stored record names, imported only from the core."""
    module_name, sep, qualname = path.partition(":")
    if not sep or not qualname:
        raise StoredValueError(f"stored value names {path!r}: expected 'module:ClassName'")
    module_name = _core_module(module_name)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise StoredValueError(f"stored value names {path!r}: module {module_name} not found") from exc
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise StoredValueError(f"stored value names {path!r}: no {qualname} in {module_name}")
    if not (isinstance(obj, type) and issubclass(obj, BaseModel)):
        raise StoredValueError(f"stored value names {path!r}, which is not a pydantic model")
    return obj


def encode_value(obj: Any) -> bytes:
    """The stored record of a value: JSON naming its pydantic model class, if any."""
    if isinstance(obj, BaseModel):
        record = {"model": model_path(type(obj)), "value": obj.model_dump(mode="json")}
    else:
        record = {"model": None, "value": obj}
    return json.dumps(record, indent=2, sort_keys=True).encode()


def decode_value(data: bytes) -> Any:
    """The value of a stored record, as the core pydantic model it was written from."""
    record = json.loads(data)
    if record.get("model") is None:
        return record["value"]
    return model_class(record["model"]).model_validate(record["value"])


@dataclass(frozen=True)
class ValuePin:
    """The sha256 a stored value must hash to, and what recorded it, worded for an error
    (e.g. "the materialization of engine [x86-cpu|fp32] in run 1a2b...")."""

    sha256: str
    recorded_by: str


def file_pins(value: Any) -> Iterator[tuple[str, str]]:
    """``(store key, sha256)`` of every file a value describes: each nested model with ``key``
    and ``sha256`` fields (a ``StoredFile``, a registry ``Pointer``), at any depth."""
    if isinstance(value, BaseModel):
        fields = {name: getattr(value, name) for name in type(value).model_fields}
        key, sha256 = fields.get("key"), fields.get("sha256")
        if isinstance(key, str) and isinstance(sha256, str):
            yield key, sha256
        for item in fields.values():
            yield from file_pins(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from file_pins(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from file_pins(item)


def read_stored_value(store: ArtifactStore, key: str, pin: ValuePin | None) -> Any:
    """The value stored at ``key``, its bytes verified against ``pin``. ``pin=None`` reads
    against the store's own record only: for callers that have no record of the write at all
    (say so in their docstring); a mismatch raises ``PinnedHashMismatchError`` naming the pin's
    origin. The origin is noted for the files the value describes, for their later reads."""
    if pin is None:
        return decode_value(store.get_bytes(key))
    note_pin_origin(key, pin.sha256, pin.recorded_by)
    value = decode_value(store.get_bytes(key, expected_sha256=pin.sha256))
    for file_key, sha256 in file_pins(value):
        note_pin_origin(file_key, sha256, pin.recorded_by)
    return value
