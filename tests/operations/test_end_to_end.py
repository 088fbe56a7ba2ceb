"""No-click automation end to end: a bundle dropped into the inbox becomes engines, evaluation,
simulation, a pack published to the local OCI registry and a registry entry pinning its digest on
every supported CPU cell through the real inbox sensor and the
declarative automation conditions alone (the `per_target_automation` sensor's, evaluated by the
in-process driver), on a real Dagster instance in a temporary ADAS_HOME. Nothing else is asked for.
"""

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import yaml

from adas.settings import DEMO_BUNDLES_DIR
from jobs.automation_driver import drop_and_drive, tick_inbox_sensor
from tests.operations.bundle_world import (
    CPU_CELLS,
    World,
    assert_cell_is_sound,
    bundle_world,
    latest,
    materialized_partitions,
)

CANDIDATE_VERSION = "1.3.0"  # demo/bundles/candidate/contract.yaml
PRODUCTION_VERSION_FILE = DEMO_BUNDLES_DIR / "production" / "contract.yaml"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with bundle_world(tmp_path_factory, DEMO_BUNDLES_DIR / "candidate", "candidate") as w:
        yield w


def test_bundle_drop_reaches_a_registry_entry_on_every_cpu_cell_without_a_click(world: World) -> None:
    driven, instance = world.driven, world.instance
    log = "\n".join(world.log)
    # One intake run, requested by the inbox sensor; then automation runs only.
    assert len(driven.intake_runs) == 1, log
    assert driven.intake_runs[0].success
    assert driven.intake_runs[0].dagster_run.tags["adas/candidate_version"] == CANDIDATE_VERSION
    assert driven.automation_runs, log
    assert all(r.dagster_run.tags.get("dagster/from_automation_condition") for r in driven.automation_runs)

    # Only the supported CPU cells were requested: no unsupported cell (x86-cpu|fp16), no GPU cell.
    requested = {r.dagster_run.tags.get("dagster/partition") for r in driven.automation_runs} - {None}
    assert requested == set(CPU_CELLS), log
    graph = world.defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if graph.get(key).partitions_def is not None:
            assert materialized_partitions(instance, key.to_user_string()) <= set(CPU_CELLS), key
    for run in instance.get_runs():
        assert run.tags.get("dagster/partition") in (None, *CPU_CELLS), run.tags

    # Engines, evaluation, simulation and a registry entry on both CPU cells.
    for key in (
        "engine",
        "production_engine",
        "triton_model_repository",
        "model_pack",
        "published_pack",
        "eval_report",
        "regression_gate",
        "closed_loop_simulation",
        "sim_verdict",
        "registry_entry",
    ):
        assert materialized_partitions(instance, key) == set(CPU_CELLS), key

    registry = world.defs.resources["registry"].store()
    production_version = _contract_version(PRODUCTION_VERSION_FILE)
    digests: dict[str, str] = {}
    for cell in CPU_CELLS:
        verdicts = {
            asset: latest(instance, asset, cell).metadata["verdict"].value
            for asset in ("regression_gate", "sim_verdict")
        }
        # The candidate is better than production, but the tiny split (critical slices of a few
        # images) and the quick sweep (4 paired runs) cannot show it: both gates are amber,
        # "insufficient evidence", never green on so little. Amber warns (it does not fail the
        # run, unlike red); governance then waits for more evidence or a quoting approval.
        assert verdicts == {"regression_gate": "amber", "sim_verdict": "amber"}, (cell, verdicts)
        cell_runs = [r for r in driven.automation_runs if r.dagster_run.tags.get("dagster/partition") == cell]
        assert cell_runs and all(r.success for r in cell_runs), (cell, log)

        # The registry entry names the candidate and records the verdicts this cell reached.
        entry = latest(instance, "registry_entry", cell).metadata
        assert entry["version"].value == CANDIDATE_VERSION
        assert entry["newly_registered"].value is True
        assert entry["evaluation_gate"].value == entry["simulation_gate"].value == "amber"
        target = cell.replace("|", "/")
        (stored,) = registry.entries(version=CANDIDATE_VERSION, target=target)
        assert f"#{stored.id} " in entry["entry"].value
        assert stored.body.evaluation is not None and stored.body.evaluation.status == "amber"
        assert stored.body.simulation is not None and stored.body.simulation.status == "amber"
        # Each undecided delta is quoted with its interval, for an approval to quote in turn.
        assert stored.body.evaluation.amber and all("(n = " in q for q in stored.body.evaluation.amber)
        assert stored.body.simulation.amber and all("(n = " in q for q in stored.body.simulation.amber)
        # Registered and staged; automation never promotes: production stays the adopted baseline.
        aliases = registry.aliases(target)
        assert aliases["staging"] is not None and aliases["staging"].id == stored.id
        assert aliases["production"] is not None and aliases["production"].version == production_version
        assert_cell_is_sound(world, cell)

        # The pack was published by digest, and the entry pins that digest.
        published = latest(instance, "published_pack", cell).metadata
        assert stored.body.pointers.oci_reference == published["oci_reference"].value
        assert entry["oci_reference"].value == published["oci_reference"].value
        assert f"-{cell.replace('|', '-')}-" in published["tag"].value
        digests[cell] = published["digest"].value
        assert stored.body.pointers.oci_reference.endswith(f"@{digests[cell]}")
        if shutil.which("skopeo"):  # an independent client reads the same manifest digest
            raw = subprocess.run(
                [
                    "skopeo",
                    "inspect",
                    "--raw",
                    "--tls-verify=false",
                    f"docker://{stored.body.pointers.oci_tag}",
                ],
                capture_output=True,
                check=True,
            ).stdout
            assert f"sha256:{hashlib.sha256(raw).hexdigest()}" == digests[cell], cell
    assert len(set(digests.values())) == 2, digests  # one artifact per cell


def test_automation_is_idle_afterwards_and_the_inbox_quiet(world: World) -> None:
    runs_before = len(world.instance.get_runs())
    assert world.driver.run_until_idle() == []
    lines: list[str] = []
    assert tick_inbox_sensor(world.defs, world.instance, log=lines.append) == []
    assert len(lines) == 1 and "no new bundles" in lines[0], lines
    assert len(world.instance.get_runs()) == runs_before


def test_a_broken_bundle_is_rejected_and_nothing_downstream_is_requested(world: World) -> None:
    from resources.inbox import REASON_FILE

    broken = world.home.root / "broken-src"
    shutil.copytree(DEMO_BUNDLES_DIR / "candidate", broken)
    contract = broken / "contract.yaml"
    contract.write_text(contract.read_text().replace(f"version: {CANDIDATE_VERSION}", "version: two"))
    candidates_before = len(
        world.instance.fetch_materializations(dg.AssetKey("candidate_checkpoint"), limit=10).records
    )
    lines: list[str] = []
    driven = drop_and_drive(world.driver, broken, world.home.inbox, "broken", sensor_log=lines.append)
    # One intake run, which fails naming the field; automation requests nothing after it.
    assert len(driven.intake_runs) == 1 and not driven.intake_runs[0].success
    assert driven.automation_runs == []
    assert any("broken rejected" in line and "contract.yaml: version" in line for line in lines), lines
    (moved,) = [p for p in world.home.rejected.iterdir() if p.name.startswith("broken")]
    assert "'two' is not a semantic version" in (moved / REASON_FILE).read_text()
    assert (
        len(world.instance.fetch_materializations(dg.AssetKey("candidate_checkpoint"), limit=10).records)
        == candidates_before
    )


def _contract_version(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["version"])
