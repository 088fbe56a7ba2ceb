"""The architecture as a checked contract: names users rely on, and a core without Dagster."""

import json
import subprocess
import sys
from pathlib import Path

import dagster as dg

from adas_assets.definitions import defs

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).with_name("definitions_snapshot.json")


def definitions_listing(definitions: dg.Definitions) -> dict:
    """Every asset key (group, partition keys), check, job, sensor and schedule users can see."""
    graph = definitions.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
        node = graph.get(key)
        pd = node.partitions_def
        assets[key.to_user_string()] = {
            "group": node.group_name,
            "partition_keys": sorted(pd.get_partition_keys()) if pd else None,
        }
    return {
        "assets": assets,
        "checks": sorted(f"{c.asset_key.to_user_string()}:{c.name}" for c in graph.asset_check_keys),
        "jobs": sorted(j.name for j in definitions.resolve_all_job_defs() if not j.name.startswith("__")),
        "sensors": sorted(s.name for s in definitions.sensors or []),
        "schedules": sorted(s.name for s in definitions.schedules or []),
    }


def test_names_match_the_committed_snapshot() -> None:
    """A rename of an asset, partition, check, job, sensor or schedule is a visible decision:
    regenerate the snapshot with ``python -m tests.architecture.snapshot`` and commit it."""
    expected = json.loads(SNAPSHOT.read_text())
    actual = definitions_listing(defs)
    for section in ("assets", "checks", "jobs", "sensors", "schedules"):
        assert actual[section] == expected[section], f"{section} differ from {SNAPSHOT.name}"


def test_core_imports_without_dagster() -> None:
    """The registry CLI and the simulation shard pods use the core without loading Dagster."""
    code = (
        "import sys, adas.registry.cli, adas.simulation.orchestration, adas.registry, adas.simulation; "
        "import adas.evaluation.pipeline, adas.packaging.serving, adas.intake.bundle; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('dagster', 'dagster_aws', 'dagster_k8s', 'resources', 'sensors', 'jobs', 'adas_assets')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout
