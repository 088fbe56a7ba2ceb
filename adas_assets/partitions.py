"""The ``device`` x ``precision`` partitions, generated from the target catalog."""

from __future__ import annotations

import warnings

import dagster as dg

from adas.catalog import TargetCatalog, default_catalog

DEVICE = "device"
PRECISION = "precision"


def target_partitions(catalog: TargetCatalog) -> dg.MultiPartitionsDefinition:
    """Every device x precision cell; unsupported cells exist so the grid shows them, marked."""
    return dg.MultiPartitionsDefinition(
        {
            DEVICE: dg.StaticPartitionsDefinition(catalog.devices),
            PRECISION: dg.StaticPartitionsDefinition(list(catalog.precisions)),
        }
    )


def partition_key(device: str, precision: str) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey({DEVICE: device, PRECISION: precision})


def supported_partition_keys(catalog: TargetCatalog) -> list[str]:
    return [partition_key(d, p) for d, p in catalog.supported_pairs()]


def device_and_precision(key: str | dg.MultiPartitionKey) -> tuple[str, str]:
    """Split a partition key into (device, precision), whatever form Dagster hands it in."""
    if isinstance(key, dg.MultiPartitionKey):
        dims = key.keys_by_dimension
        return dims[DEVICE], dims[PRECISION]
    # Dagster joins dimension values in alphabetical order of dimension name: device|precision.
    device, precision = str(key).split("|")
    return device, precision


TARGET_PARTITIONS = target_partitions(default_catalog())


def per_target_description(summary: str) -> str:
    """An asset description that ends with the catalog's support matrix (shown in the UI)."""
    return (
        f"{summary.strip()}\n\nPartitioned by `device` x `precision` from `config/targets.yaml`; "
        "cells marked unsupported are never built or requested by automation:\n\n"
        + default_catalog().support_matrix_markdown()
    )


def per_target_check(name: str, asset: str, *, blocking: bool = False, description: str) -> dg.AssetCheckSpec:
    """A check of one target cell of a partitioned asset.

    Partitioned like its asset, so each cell has its own result in the UI and
    ``all_deps_blocking_checks_passed`` judges a cell by that cell's result, not by whichever
    cell's check ran last.
    """
    with warnings.catch_warnings():  # partitioned asset checks are "preview" in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=blocking, description=description, partitions_def=TARGET_PARTITIONS
        )
