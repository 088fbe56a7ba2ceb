"""ONNX bundles (#19 item 2) from the inbox to both CPU cells on the real Dagster path: the
shipped CenterNet-e2e (kind detections, stretch), a small letterboxed dense detector built here,
and the same weights exported with their decode in the graph in source pixels, taking each frame's
size as a second input (RT-DETR's ``orig_target_sizes``). Intake takes the file in, the export step validates it (no re-export), the FP32 reference
is ONNX Runtime on the given file in the sandbox, equivalence compares decoded boxes, the INT8
calibration sees frames placed as the contract says, and the Triton contract smoke returns what
the in-process decoder returns."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import onnx
import pytest
import torch
import yaml

from adas.detector.dense_bundle import build_dense_contract, write_dense_bundle
from adas.detector.dense_model import build_dense_model
from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Lineage, Normalization
from adas.packaging.keys import init_local_keys
from adas.packaging.refs import EngineRef, ExportRef
from adas.packaging.trust import TRUST_FILE
from adas.settings import AdasHome
from adas.storage import LocalArtifactStore
from adas_assets.definitions import make_definitions
from resources import build_resources
from resources.io_manager import decode_value
from tests.detector.kind_exports import EXPORTS, kind_contract
from tests.detector.kind_exports import export as export_onnx

pytestmark = pytest.mark.slow

DEMO = Path(__file__).resolve().parents[2] / "demo" / "bundles"
CELLS = ("x86-cpu|fp32", "x86-cpu|int8")


def _dense_bundle(dest: Path) -> Path:
    torch.manual_seed(0)
    return write_dense_bundle(
        build_dense_model(width=8).eval(),
        dest,
        version="2.0.0",
        model_name="dense-test",
        task="vehicle-detection",
        lineage=Lineage(training_run_id="test", dataset_tag="golden_train@test", git_sha="abcdef1"),
        normalization=Normalization(scale=1 / 255, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0)),
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")],
        score_threshold=0.05,
    )


def _source_size_bundle(dest: Path) -> Path:
    """Kind ``detections`` in source pixels with an ``orig_target_sizes`` input: the small dense
    model, its class logits amplified into a spread of scores (untrained features are tiny)."""
    torch.manual_seed(0)
    model = build_dense_model(width=8).eval()
    with torch.no_grad():
        for head in (model.head4, model.head8):
            head.cls_out.weight.normal_(std=1000.0)
            head.cls_out.bias.fill_(-2.0)
    base = build_dense_contract(
        version="2.0.0", model_name="source-size-test", task="vehicle-detection",
        normalization=Normalization(scale=1 / 255, mean=(0.45, 0.45, 0.45), std=(0.2, 0.2, 0.2)),
        classes=[(1, "car"), (2, "truck"), (3, "motorcycle")], num_candidates=model.config.num_candidates,
        score_threshold=0.5, max_detections=100,
    )  # fmt: skip
    contract = kind_contract(base, "detections_source")
    module, names = EXPORTS["detections_source"](model, base.postprocess.nms_iou_threshold)
    dest.mkdir(parents=True)
    (dest / contract.model_file).write_bytes(export_onnx(module, names, contract.input.height_width, True))
    (dest / CONTRACT_FILE).write_text(yaml.safe_dump(contract.model_dump(mode="json"), sort_keys=False))
    lineage = Lineage(training_run_id="test", dataset_tag="golden_train@test", git_sha="abcdef1")
    (dest / LINEAGE_FILE).write_text(lineage.model_dump_json())
    return dest


# The source-size bundle's Dagster cells run nightly (CI time): in CI its kind goes through intake,
# equivalence and the Triton smoke in tests/packaging/test_kind_conformance_pipeline.py.
@pytest.fixture(
    scope="module",
    params=["centernet-e2e", "dense-letterbox", pytest.param("source-size", marks=pytest.mark.nightly)],
)
def packaged(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    mp = pytest.MonkeyPatch()
    mp.setenv("ADAS_PACKAGING_CONFIG", str(Path(__file__).with_name("fast_packaging.yaml")))
    home = AdasHome(tmp_path_factory.mktemp("adas-home")).ensure()
    mp.setenv("ADAS_HOME", str(home.root))
    mp.delenv("ADAS_TRUSTED_KEYS", raising=False)
    mp.delenv("ADAS_SIGNING_KEY", raising=False)
    init_local_keys(home.keys, home.keys / TRUST_FILE)
    resources = build_resources("local", home)
    assets = list(make_definitions(resources).assets or [])
    if request.param == "centernet-e2e":
        shutil.copytree(DEMO / "centernet-e2e", home.inbox / "cand")
    elif request.param == "dense-letterbox":
        _dense_bundle(home.inbox / "cand")
    else:
        _source_size_bundle(home.inbox / "cand")
    with dg.instance_for_test() as instance:

        def run(selection: list[str], partition_key: str | None = None, **kw: Any) -> Any:
            return dg.materialize(
                assets, selection=selection, partition_key=partition_key, resources=resources,
                instance=instance, raise_on_error=False, **kw,
            )  # fmt: skip

        data = run(
            ["target_catalog", "golden_dataset", "slice_catalog", "calibration_shard"],
            run_config=dg.RunConfig(
                ops={
                    "golden_dataset": {"config": {"size": "tiny", "workers": 1}},
                    "calibration_shard": {"config": {"size": 8, "strata": ["all"]}},
                }
            ),
        )
        assert data.success
        intake = run(
            ["candidate_checkpoint", "staged_checkpoint", "exported_graph"],
            run_config=dg.RunConfig(
                ops={
                    "candidate_checkpoint": {
                        "config": {"bundle_name": "cand", "bundle_location": str(home.inbox / "cand")}
                    }
                }
            ),
        )
        results = {"intake": intake}
        if intake.success:
            for key in CELLS:
                results[key] = run(["engine", "triton_model_repository", "model_pack"], key)
        yield request.param, home, results
    mp.undo()


def _value(home: AdasHome, key: str) -> Any:
    return decode_value(LocalArtifactStore(root=str(home.artifacts)).get_bytes(key))


def _failure(result: Any) -> str:
    return "; ".join(
        str(e.event_specific_data.error.message)[:800]
        for e in result.all_events
        if e.event_type_value == "STEP_FAILURE"
    )


def test_intake_takes_the_onnx_bundle_and_the_export_is_the_given_file(packaged: Any) -> None:
    name, home, results = packaged
    assert results["intake"].success, _failure(results["intake"])
    export: ExportRef = _value(home, "asset-values/exported_graph/value.json")
    given = (
        (DEMO / "centernet-e2e" / "model.onnx")
        if name == "centernet-e2e"
        else (home.inbox / "cand" / "model.onnx")
    )
    if given.exists():  # the inbox copy moves to taken/ once intake is done
        assert export.onnx.sha256 == export.torch_program.sha256
    store = LocalArtifactStore(root=str(home.artifacts))
    model = onnx.load(store.fetch(export.onnx.key, expected_sha256=export.onnx.sha256))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_param")  # dynamic batch kept


@pytest.mark.parametrize("cell", CELLS)
def test_both_cpu_cells_build_pass_equivalence_and_the_triton_smoke(packaged: Any, cell: str) -> None:
    _, home, results = packaged
    result = results[cell]
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    if "numerical_equivalence" in checks:  # its own words first: they say what drifted
        equivalence = checks["numerical_equivalence"]
        assert equivalence.passed, f"{equivalence.description}\n{equivalence.metadata}"
    assert result.success, _failure(result)
    device, precision = cell.split("|")
    engine: EngineRef = _value(home, f"asset-values/engine/device={device}/precision={precision}.json")
    assert engine.engine.key.endswith(f"{device}/{precision}/model.onnx")
    equivalence = checks["numerical_equivalence"]
    assert equivalence.passed, equivalence.description
    smoke = checks["triton_contract_smoke"]
    assert smoke.passed, smoke.description
