"""Metadata helpers shared by every asset group (the Dagster layer only)."""

from typing import Any

import dagster as dg


def table(rows: list[dict[str, Any]], types: dict[str, str]) -> dg.TableMetadataValue:
    """A metadata table whose columns (name -> Dagster column type) are declared up front."""
    return dg.MetadataValue.table(
        [dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in types.items()]),
    )
