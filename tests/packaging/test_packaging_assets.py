"""The packaging graph through Dagster: CPU cells build real engines; other cells fail clearly."""

from pathlib import Path

import dagster as dg
import pytest

from adas_assets.definitions import make_definitions
from adas_assets.packaging.refs import EngineRef
from adas_assets.settings import AdasHome
from resources import build_resources
from resources.artifact_store import LocalArtifactStore
from resources.io_manager import _decode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, bundle_template: Path):  # type: ignore[no-untyped-def]
    home = AdasHome(tmp_path_factory.mktemp("adas-home")).ensure()
    resources = build_resources("local", home)
    defs = make_definitions(resources)
    assets = list(defs.assets or [])
    import shutil

    shutil.copytree(bundle_template, home.inbox / "cand")
    with dg.instance_for_test() as instance:
        data = dg.materialize(
            assets,
            selection=["target_catalog", "golden_dataset", "slice_catalog", "calibration_shard"],
            resources=resources,
            instance=instance,
            run_config=dg.RunConfig(
                ops={
                    "golden_dataset": {"config": {"size": "tiny", "workers": 1}},
                    "calibration_shard": {"config": {"size": 8, "strata": ["all"]}},
                }
            ),
        )
        assert data.success
        intake = dg.materialize(
            assets,
            selection=["candidate_checkpoint", "staged_checkpoint", "exported_graph"],
            resources=resources,
            instance=instance,
            run_config=dg.RunConfig(
                ops={
                    "candidate_checkpoint": {
                        "config": {"bundle_name": "cand", "bundle_location": str(home.inbox / "cand")}
                    }
                }
            ),
        )
        assert intake.success
        results = {
            key: dg.materialize(
                assets,
                selection=["engine"],
                partition_key=key,
                resources=resources,
                instance=instance,
                raise_on_error=False,
            )
            for key in ("x86-cpu|fp32", "x86-cpu|int8", "x86-cpu|fp16", "t4|fp16")
        }
        yield home, results


def _engine_ref(home: AdasHome, device: str, precision: str) -> EngineRef:
    store = LocalArtifactStore(root=str(home.artifacts))
    return _decode(store.get_bytes(f"asset-values/engine/device={device}/precision={precision}.json"))


def test_cpu_cells_build_verified_engines(packaged) -> None:  # type: ignore[no-untyped-def]
    home, results = packaged
    assert results["x86-cpu|fp32"].success and results["x86-cpu|int8"].success
    store = LocalArtifactStore(root=str(home.artifacts))
    fp32, int8 = _engine_ref(home, "x86-cpu", "fp32"), _engine_ref(home, "x86-cpu", "int8")
    assert fp32.engine.key == "models/vehicle-detection-2d/0.1.0/x86-cpu/fp32/model.onnx"
    assert int8.calibration_cache is not None and int8.calibration_cache.key.endswith(
        "x86-cpu/int8/calibration.cache"
    )
    store.fetch(int8.engine.key, expected_sha256=int8.engine.sha256)
    import onnx

    ops = {n.op_type for n in onnx.load(store.fetch(int8.engine.key)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert fp32.candidate.bundle_sha256 == int8.candidate.bundle_sha256


def test_unsupported_cell_fails_naming_the_catalog_and_writes_nothing(packaged) -> None:  # type: ignore[no-untyped-def]
    home, results = packaged
    result = results["x86-cpu|fp16"]
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "x86-cpu/fp16 is not a supported combination" in str(failure.event_specific_data.error)
    assert not list((home.artifacts / "models").rglob("x86-cpu/fp16/*"))


def test_gpu_cell_off_a_gpu_node_says_what_it_needs(packaged) -> None:  # type: ignore[no-untyped-def]
    home, results = packaged
    result = results["t4|fp16"]
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "needs a t4 node with TensorRT" in str(failure.event_specific_data.error)
    assert not list((home.artifacts / "models").rglob("t4/fp16/*"))
