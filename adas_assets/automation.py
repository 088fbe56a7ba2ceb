"""Declarative automation that knows which device x precision cells exist in the catalog."""

from __future__ import annotations

import dagster as dg

from adas_assets.catalog import default_catalog
from adas_assets.partitions import supported_partition_keys


class SupportedTargetCondition(dg.AutomationCondition):
    """True only for partitions whose device offers that precision in ``targets.yaml``.

    ANDed into every per-target condition so automation never requests (or retries) a cell
    the catalog marks unsupported. Evaluated in the code server (see the automation sensor),
    so it reads the same catalog the definitions were built from.
    """

    @property
    def name(self) -> str:
        return "supported_target"

    def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        keys = set(supported_partition_keys(default_catalog()))
        return dg.AutomationResult(
            context, true_subset=context.candidate_subset.compute_intersection_with_partition_keys(keys)
        )


def eager_on_supported_targets() -> dg.AutomationCondition:
    """Eager automation restricted to catalog-supported cells of a device x precision asset,
    held back while an upstream blocking check (equivalence, contract smoke, gates) is red."""
    return (
        dg.AutomationCondition.eager()
        & SupportedTargetCondition()
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("eager, supported targets only, upstream blocking checks green")
