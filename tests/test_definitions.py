"""The code location loads, validates, and exposes the graph users browse."""

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from adas_assets.definitions import defs
from adas_assets.partitions import TARGET_PARTITIONS

REPO = Path(__file__).resolve().parents[1]


def test_definitions_validate() -> None:
    dg.Definitions.validate_loadable(defs)


def test_intake_group_and_jobs() -> None:
    graph = defs.resolve_asset_graph()
    intake = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).group_name == "intake"}
    assert {
        "target_catalog",
        "golden_dataset",
        "slice_catalog",
        "calibration_shard",
        "replay_log_bundles",
        "candidate_checkpoint",
    } <= intake
    assert defs.resolve_job_def("candidate_intake") and defs.resolve_job_def("golden_data")
    assert {s.name for s in defs.sensors} >= {"candidate_inbox_sensor", "per_target_automation"}


def test_partitioned_assets_use_the_catalog_grid() -> None:
    graph = defs.resolve_asset_graph()
    partitioned = [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def is not None]
    for key in partitioned:
        assert graph.get(key).partitions_def == TARGET_PARTITIONS, key


def test_code_location_loads_without_heavy_imports() -> None:
    """The UI reloads the code location often: torch, the simulator and GE stay out of import time."""
    code = (
        "import sys, adas_assets.definitions; "
        "print(','.join(m for m in ('torch','pygame','highway_env','great_expectations','onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""


def test_dagster_cli_validates_workspace(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path), "ADAS_HOME": str(tmp_path / "adas")},
    )
    assert out.returncode == 0, out.stderr[-2000:]
