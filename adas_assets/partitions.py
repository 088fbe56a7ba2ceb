"""The ``device`` x ``precision`` partitions, generated from the target catalog.

Partition keys are parsed and formatted by :class:`adas.cell.Cell` only; this module turns
cells into Dagster's partition objects and back.
"""

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import dagster as dg

from adas.catalog import TargetCatalog
from adas.cell import DEVICE_DIMENSION, PRECISION_DIMENSION, Cell, supported_cells
from resources.targets import TARGET_CATALOG


def target_partitions(catalog: TargetCatalog) -> dg.MultiPartitionsDefinition:
    """Every device x precision cell; unsupported cells exist so the grid shows them, marked."""
    return dg.MultiPartitionsDefinition(
        {
            DEVICE_DIMENSION: dg.StaticPartitionsDefinition(catalog.devices),
            PRECISION_DIMENSION: dg.StaticPartitionsDefinition(list(catalog.precisions)),
        }
    )


def partition_key(cell: Cell) -> dg.MultiPartitionKey:
    return dg.MultiPartitionKey(cell.dimensions)


def supported_partition_keys(catalog: TargetCatalog) -> list[dg.MultiPartitionKey]:
    return [partition_key(c) for c in supported_cells(catalog)]


TARGET_PARTITIONS = target_partitions(TARGET_CATALOG)


def per_target_description(summary: str) -> str:
    """An asset description that ends with the catalog's support matrix (shown in the UI)."""
    return (
        f"{summary.strip()}\n\nPartitioned by `device` x `precision` from `config/targets.yaml`; "
        "cells marked unsupported are never built or requested by automation:\n\n"
        + TARGET_CATALOG.support_matrix_markdown()
    )


@contextmanager
def _partitioned_checks() -> Iterator[None]:
    with warnings.catch_warnings():  # partitioned asset checks are "preview" in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield


def per_target_check(name: str, asset: str, *, blocking: bool = False, description: str) -> dg.AssetCheckSpec:
    """A check of one target cell of a partitioned asset.

    Partitioned like its asset, so each cell has its own result in the UI and
    ``all_deps_blocking_checks_passed`` judges a cell by that cell's result, not by whichever
    cell's check ran last.
    """
    with _partitioned_checks():
        return dg.AssetCheckSpec(
            name, asset=asset, blocking=blocking, description=description, partitions_def=TARGET_PARTITIONS
        )


def per_target_asset_check(
    asset: dg.AssetKey | dg.AssetsDefinition,
    *,
    name: str,
    blocking: bool = False,
    description: str,
    automation_condition: dg.AutomationCondition | None = None,
) -> Callable[[Callable[..., dg.AssetCheckResult]], dg.AssetChecksDefinition]:
    """``@dg.asset_check`` of one target cell of a partitioned asset, partitioned like
    :func:`per_target_check`; the check function takes the asset's value by its name."""

    def decorate(fn: Callable[..., dg.AssetCheckResult]) -> dg.AssetChecksDefinition:
        with _partitioned_checks():
            return dg.asset_check(
                asset=asset,
                name=name,
                blocking=blocking,
                partitions_def=TARGET_PARTITIONS,
                description=description,
                automation_condition=automation_condition,
            )(fn)

    return decorate
