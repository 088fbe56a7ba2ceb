"""An IO manager that keeps small asset values as hashed JSON in the artifact store.

Assets pass *descriptors* between each other (a candidate's URIs and hashes, a dataset's
manifest keys), never large binaries: those live in the artifact store and are verified
when read. Values are pydantic models of the core; the stored record (``adas.values``: the
one codec, also used outside Dagster) names the model class so the downstream asset gets the
same typed object back, from exactly the upstream materialization.

**Pinned reads.** ``handle_output`` records the value's sha256 (``value_sha256``) in the output
metadata, so in the materialization record of the Dagster instance, which the store cannot
rewrite. Every read of a stored value (``load_input``, :func:`read_value`) looks up the latest
materialization record of that asset (partition) and reads the value against it, whatever the
``.sha256`` sidecar says; a mismatch fails the step naming the value's URI, both hashes and the
run that wrote it. The same origin is noted for every file the value describes, so a later read
of a tampered engine through that descriptor names the writing run too.

- A record without ``value_sha256`` (the asset stored no value in that run, or something other
  than this IO manager recorded it) is refused: the latest materialization vouches for no bytes,
  so none are read.
- No record at all (an instance that never materialized the asset: values seeded into a store by
  a test, or a store shared with another Dagster instance) falls back to the store's own record
  and says so in the step log. There is nothing to pin to, and failing would make such a store
  unreadable; a missing record is never taken for a record that lacks the hash.
"""

import contextlib
import typing
from typing import Any

import dagster as dg

from adas.storage import ArtifactIntegrityError, ArtifactStore
from adas.values import ValuePin, decode_value, encode_value, read_stored_value, stored_value_key

__all__ = [
    "ArtifactJsonIOManager",
    "decode_value",
    "encode_value",
    "read_value",
    "upstream_value_pin",
    "value_key",
]

VALUE_SHA256 = "value_sha256"


def _partition_path(partition_key: str, partitions_def: dg.PartitionsDefinition | None) -> str:
    if isinstance(partitions_def, dg.MultiPartitionsDefinition) and not isinstance(
        partition_key, dg.MultiPartitionKey
    ):
        partition_key = partitions_def.get_partition_key_from_str(partition_key)
    if isinstance(partition_key, dg.MultiPartitionKey):
        return "/".join(f"{dim}={value}" for dim, value in sorted(partition_key.keys_by_dimension.items()))
    return f"partition={partition_key}"


def value_key(
    asset_key: dg.AssetKey,
    partition_key: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> str:
    """Store key of an asset's (partition's) value: ``asset-values/<asset>/<dim>=<value>/....json``."""
    partition = None if partition_key is None else _partition_path(partition_key, partitions_def)
    return stored_value_key(asset_key.path, partition)


def _asset_label(asset_key: dg.AssetKey, partition_key: str | None) -> str:
    name = asset_key.to_user_string()
    return name if partition_key is None else f"{name} [{partition_key}]"


def upstream_value_pin(
    instance: dg.DagsterInstance | None, asset_key: dg.AssetKey, partition_key: str | None = None
) -> ValuePin | None:
    """The ``value_sha256`` of the latest materialization of the asset (partition) in ``instance``,
    with the run that recorded it; None when the instance holds no such record at all (see the
    module docstring). A record without the hash raises :class:`ArtifactIntegrityError`."""
    if instance is None:
        return None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=asset_key, asset_partitions=None if partition_key is None else [str(partition_key)]
        ),
        limit=1,
    ).records
    if not records:
        return None
    record = records[0]
    label = _asset_label(asset_key, partition_key)
    materialization = record.asset_materialization
    entry = materialization.metadata.get(VALUE_SHA256) if materialization is not None else None
    sha256 = getattr(entry, "value", None)
    if not isinstance(sha256, str) or not sha256:
        raise ArtifactIntegrityError(
            f"{label}: its latest materialization (run {record.run_id}) records no {VALUE_SHA256}, "
            "so no stored value is vouched for; re-materialize it"
        )
    return ValuePin(sha256=sha256, recorded_by=f"the materialization of {label} in run {record.run_id}")


def _instance_of(context: dg.InputContext) -> dg.DagsterInstance | None:
    """The run's instance; a context built by hand without one has no records to pin to."""
    try:
        return context.instance
    except dg.DagsterInvariantViolationError:
        return None


def _warn(context: dg.InputContext, message: str) -> None:
    with contextlib.suppress(dg.DagsterInvariantViolationError):  # a context built by hand has no log
        context.log.warning(message)


def read_value(
    store: ArtifactStore,
    instance: dg.DagsterInstance | None,
    asset_key: dg.AssetKey,
    partition_key: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> Any | None:
    """The stored value of an asset (partition), read against its latest materialization in
    ``instance`` exactly as ``load_input`` reads it; None when it was never materialized (no
    record and nothing stored)."""
    key = value_key(asset_key, partition_key, partitions_def)
    pin = upstream_value_pin(instance, asset_key, partition_key)
    if pin is None and not store.exists(key):
        return None
    return read_stored_value(store, key, pin)


class ArtifactJsonIOManager(dg.ConfigurableIOManager):
    store: dg.ResourceDependency[ArtifactStore]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_asset_partitions else None
        key = value_key(context.asset_key, partition, context.asset_partitions_def if partition else None)
        stored = self.store.put_bytes(key, encode_value(obj))
        context.add_output_metadata({"value_uri": stored.uri, VALUE_SHA256: stored.sha256})

    def _load(
        self,
        context: dg.InputContext,
        partition_key: str | None,
        partitions_def: dg.PartitionsDefinition | None,
        optional: bool = False,
    ) -> Any:
        """One stored value, pinned to its latest materialization; with ``optional``, None when
        the asset (partition) has neither a record nor a stored value."""
        asset_key = context.asset_key
        key = value_key(asset_key, partition_key, partitions_def)
        pin = upstream_value_pin(_instance_of(context), asset_key, partition_key)
        if pin is None:
            if optional and not self.store.exists(key):
                return None
            _warn(
                context,
                f"{_asset_label(asset_key, partition_key)}: no materialization record in this instance; "
                "its stored value is read against the store's own hash record only",
            )
        return read_stored_value(self.store, key, pin)

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            return self._load(context, None, None)
        partitions_def = context.asset_partitions_def
        partition_keys = context.asset_partition_keys
        # An input annotated dict[str, T] fans in across partitions (e.g. every precision of a
        # device); anything else must map to exactly one upstream partition.
        if typing.get_origin(context.dagster_type.typing_type) is not dict:
            if len(partition_keys) != 1:
                raise dg.DagsterInvariantViolationError(
                    f"input {context.name!r} maps to {len(partition_keys)} partitions of {key.to_user_string()}; "
                    "annotate it as dict[str, ...] to receive them all"
                )
            return self._load(context, partition_keys[0], partitions_def)
        values = {}
        for pk in partition_keys:
            value = self._load(context, pk, partitions_def, optional=True)
            if value is not None:
                values[str(pk)] = value
        return values
