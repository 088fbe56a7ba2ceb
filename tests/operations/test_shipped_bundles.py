"""Every shipped bundle goes from the inbox to a registry entry on both CPU cells (#19): the
CenterNet-e2e (ONNX, kind ``detections``, decode in the graph) and the dense family (ONNX, kind
``dense``, letterboxed 160x512), each gated against production, a CenterNet of another kind and
input size. The CenterNet v1 candidate takes the same path in CI (``test_end_to_end.py``); these two
run nightly (``make test-all``): together they would push CI past its time budget.

Per cell: equivalence green, the Triton contract smoke answering as the in-process decoder, and the
evaluation's numbers reproduced by pycocotools on its stored predictions."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adas.settings import DEMO_BUNDLES_DIR
from tests.operations.bundle_world import (
    CPU_CELLS,
    World,
    assert_cell_is_sound,
    bundle_world,
    contract_version,
    latest,
    materialized_partitions,
)

pytestmark = [pytest.mark.slow, pytest.mark.nightly]


@pytest.fixture(scope="module", params=["centernet-e2e", "dense-candidate"])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with bundle_world(tmp_path_factory, DEMO_BUNDLES_DIR / request.param, request.param) as w:
        yield w


def test_the_bundle_reaches_a_registry_entry_on_both_cpu_cells(world: World) -> None:
    bundle = DEMO_BUNDLES_DIR / world.driven.intake_runs[0].dagster_run.tags["adas/bundle"]
    log = "\n".join(world.log)
    assert len(world.driven.intake_runs) == 1 and world.driven.intake_runs[0].success, log
    for key in ("engine", "model_pack", "eval_report", "regression_gate", "sim_verdict", "registry_entry"):
        assert materialized_partitions(world.instance, key) == set(CPU_CELLS), (key, log)
    registry = world.defs.resources["registry"].store()
    version = contract_version(bundle)
    for cell in CPU_CELLS:
        entry = latest(world.instance, "registry_entry", cell).metadata
        assert entry["version"].value == version
        # Gated against production (a CenterNet 1.2.0 of kind heatmap, 96x384 stretched): on the
        # tiny split neither gate can be sure, so both are amber, never red.
        assert entry["evaluation_gate"].value in ("green", "amber"), entry["evaluation_gate"].value
        (stored,) = registry.entries(version=version, target=cell.replace("|", "/"))
        assert f"#{stored.id} " in entry["entry"].value
        assert stored.body.evaluation is not None and stored.body.evaluation.status != "red"
        metrics = assert_cell_is_sound(world, cell)
        assert metrics["AP"] > 0.05, (cell, metrics)
