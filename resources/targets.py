"""The target catalog this code location is built from (``config/targets.yaml``), read once.

The partitions, the automation conditions, the Kubernetes placement and the simulation shard
pods all need the same catalog at definition time, so the Dagster layer reads it here and hands
it to the core explicitly; the core never reads a default catalog itself.
"""

from adas.catalog import TargetCatalog, load_catalog

TARGET_CATALOG: TargetCatalog = load_catalog()
