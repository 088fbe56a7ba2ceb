"""An IO manager that keeps small asset values as hashed JSON in the artifact store.

Assets pass *descriptors* between each other (a candidate's URIs and hashes, a dataset's
manifest keys), never large binaries: those live in the artifact store and are verified
when read. Values are pydantic models of the core; the stored record (``adas.values``: the
one codec, also used outside Dagster) names the model class so the downstream asset gets the
same typed object back, from exactly the upstream materialization.
"""

import typing
from typing import Any

import dagster as dg

from adas.storage import ArtifactStore
from adas.values import decode_value, encode_value, stored_value_key

__all__ = ["ArtifactJsonIOManager", "decode_value", "encode_value", "read_value", "value_key"]


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


def read_value(
    store: ArtifactStore,
    asset_key: dg.AssetKey,
    partition_key: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
) -> Any | None:
    """The stored value of an asset (partition), or None when it was never materialized."""
    key = value_key(asset_key, partition_key, partitions_def)
    return decode_value(store.get_bytes(key)) if store.exists(key) else None


class ArtifactJsonIOManager(dg.ConfigurableIOManager):
    store: dg.ResourceDependency[ArtifactStore]

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        if obj is None:
            return
        partition = context.partition_key if context.has_asset_partitions else None
        key = value_key(context.asset_key, partition, context.asset_partitions_def if partition else None)
        stored = self.store.put_bytes(key, encode_value(obj))
        context.add_output_metadata({"value_uri": stored.uri, "value_sha256": stored.sha256})

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        if not context.has_asset_partitions:
            return decode_value(self.store.get_bytes(value_key(key, None, None)))
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
            return decode_value(self.store.get_bytes(value_key(key, partition_keys[0], partitions_def)))
        values = {}
        for pk in partition_keys:
            storage_key = value_key(key, pk, partitions_def)
            if self.store.exists(storage_key):
                values[str(pk)] = decode_value(self.store.get_bytes(storage_key))
        return values
