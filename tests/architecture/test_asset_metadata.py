"""What the UI shows about every asset: a description, its owners, and where staleness matters
a freshness policy consistent with the schedules that refresh the asset."""

from datetime import timedelta

import dagster as dg

from adas_assets.cadence import (
    EVALUATION_FRESHNESS,
    GOLDEN_DATASET_FRESHNESS,
    NIGHTLY_ENGINE_FRESHNESS,
    NIGHTLY_ENGINE_REBUILD_CRON,
    NIGHTLY_REGRESSION_CRON,
    SCHEDULE_TIMEZONE,
    WEEKLY_FULL_LIBRARY_CRON,
)
from adas_assets.definitions import defs
from adas_assets.owners import (
    EVALUATION_OWNERS,
    INTAKE_OWNERS,
    PACKAGING_OWNERS,
    REGISTRY_OWNERS,
    SIMULATION_OWNERS,
)

OWNERS_BY_GROUP = {
    "intake": INTAKE_OWNERS,
    "packaging": PACKAGING_OWNERS,
    "evaluation": EVALUATION_OWNERS,
    "simulation": SIMULATION_OWNERS,
    "registry": REGISTRY_OWNERS,
}
FRESHNESS = {
    "engine": NIGHTLY_ENGINE_FRESHNESS,
    "production_engine": NIGHTLY_ENGINE_FRESHNESS,
    "eval_report": EVALUATION_FRESHNESS,
}
INTAKE_FRESHNESS = {"golden_dataset": GOLDEN_DATASET_FRESHNESS}


def _specs(groups: set[str]) -> dict[str, dg.AssetSpec]:
    graph = defs.resolve_asset_graph()
    return {
        key.to_user_string(): graph.get(key).assets_def.specs_by_key[key]
        for key in graph.get_all_asset_keys()
        if graph.get(key).group_name in groups
    }


def _owner_problems(specs: dict[str, dg.AssetSpec]) -> list[str]:
    problems = []
    for name, spec in sorted(specs.items()):
        if not (spec.description or "").strip():
            problems.append(f"{name}: no description")
        if list(spec.owners) != OWNERS_BY_GROUP[spec.group_name or ""]:
            problems.append(
                f"{name}: owners {list(spec.owners)}, expected {OWNERS_BY_GROUP[spec.group_name or '']}"
            )
    return problems


def test_every_group_has_owners() -> None:
    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == set(OWNERS_BY_GROUP)


def test_every_asset_has_a_description_and_its_groups_owners() -> None:
    assert _owner_problems(_specs(set(OWNERS_BY_GROUP) - {"intake"})) == []


def test_freshness_policies_where_staleness_matters() -> None:
    policies = {
        name: spec.freshness_policy for name, spec in _specs(set(OWNERS_BY_GROUP) - {"intake"}).items()
    }
    assert {name: p for name, p in policies.items() if p is not None} == FRESHNESS


def test_intake_assets_have_owners_and_golden_dataset_freshness() -> None:
    specs = _specs({"intake"})
    assert _owner_problems(specs) == []
    assert {
        n: s.freshness_policy for n, s in specs.items() if s.freshness_policy is not None
    } == INTAKE_FRESHNESS


def test_schedules_run_on_the_cadence_the_policies_assume() -> None:
    crons = {s.name: (s.cron_schedule, s.execution_timezone) for s in defs.schedules or []}
    assert crons == {
        "nightly_engine_rebuild": (NIGHTLY_ENGINE_REBUILD_CRON, SCHEDULE_TIMEZONE),
        "nightly_regression_evaluation": (NIGHTLY_REGRESSION_CRON, SCHEDULE_TIMEZONE),
        "weekly_full_library_evaluation": (WEEKLY_FULL_LIBRARY_CRON, SCHEDULE_TIMEZONE),
    }
    day, week = timedelta(days=1), timedelta(days=7)
    # A daily run keeps an engine within its warning window; a missed night fails it.
    assert (
        day
        < NIGHTLY_ENGINE_FRESHNESS.warn_window.to_timedelta()
        < NIGHTLY_ENGINE_FRESHNESS.fail_window.to_timedelta()
        < 2 * day
    )
    # Nightly re-evaluation keeps the report out of WARN; the weekly run alone keeps it out of FAIL.
    assert day < EVALUATION_FRESHNESS.warn_window.to_timedelta() < 2 * day
    assert week < EVALUATION_FRESHNESS.fail_window.to_timedelta() < 8 * day
