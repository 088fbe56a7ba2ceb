"""Kubernetes placement of runs, derived from the target catalog.

Every run of a device x precision partition carries its device in the tag
``dagster/partition/device``, whoever launched it (sensor, schedule, backfill, a person).
`CatalogK8sRunLauncher` turns that tag into the device's resources, node selector and
tolerations from `config/targets.yaml`, so GPU limits never have to be typed per run.
"""

from typing import Any

from dagster._core.storage.dagster_run import DagsterRun
from dagster_k8s import K8sRunLauncher
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import UserDefinedDagsterK8sConfig

from adas.catalog import TargetCatalog
from resources.placement import placement_k8s_config
from resources.targets import TARGET_CATALOG

DEVICE_TAG = "dagster/partition/device"


def placement_for_tags(tags: dict[str, str], catalog: TargetCatalog) -> dict[str, Any] | None:
    device = tags.get(DEVICE_TAG)
    return placement_k8s_config(catalog.target(device)) if device else None


def container_context_for_tags(tags: dict[str, str], catalog: TargetCatalog) -> K8sContainerContext:
    placement = placement_for_tags(tags, catalog)
    if placement is None:
        return K8sContainerContext()
    return K8sContainerContext(run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(placement))


class CatalogK8sRunLauncher(K8sRunLauncher):
    """K8sRunLauncher that places each partitioned run on its device's nodes (see module doc)."""

    def get_container_context_for_run(self, dagster_run: DagsterRun) -> K8sContainerContext:
        base = super().get_container_context_for_run(dagster_run)
        # The catalog comes last so a hand-written tag cannot under-provision a GPU run.
        return base.merge(container_context_for_tags(dict(dagster_run.tags), TARGET_CATALOG))
