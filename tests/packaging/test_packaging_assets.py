"""The packaging graph through Dagster: CPU cells build real engines; other cells fail clearly."""

import importlib.metadata
import json
from pathlib import Path

import dagster as dg
import pytest

from adas.cpu_isa import ISA_LEVELS
from adas.packaging.keys import init_local_keys
from adas.packaging.refs import EngineRef
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.settings import AdasHome
from adas.storage import ArtifactIntegrityError, LocalArtifactStore
from adas_assets.definitions import make_definitions
from resources import build_resources
from resources.io_manager import decode_value

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory, bundle_template: Path):  # type: ignore[no-untyped-def]
    mp = pytest.MonkeyPatch()
    mp.setenv("ADAS_PACKAGING_CONFIG", str(Path(__file__).with_name("fast_packaging.yaml")))
    home = AdasHome(tmp_path_factory.mktemp("adas-home")).ensure()
    mp.setenv("ADAS_HOME", str(home.root))
    mp.delenv("ADAS_TRUSTED_KEYS", raising=False)
    mp.delenv("ADAS_SIGNING_KEY", raising=False)
    init_local_keys(home.keys, home.keys / TRUST_FILE)  # adas-registry keys init
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
        results["pack"] = dg.materialize(
            assets,
            selection=["triton_model_repository", "model_pack"],
            partition_key="x86-cpu|fp32",
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        yield home, results
    mp.undo()


def _engine_ref(home: AdasHome, device: str, precision: str) -> EngineRef:
    store = LocalArtifactStore(root=str(home.artifacts))
    return decode_value(store.get_bytes(f"asset-values/engine/device={device}/precision={precision}.json"))


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
    for ref in (fp32, int8):  # the build report says what the engine was built with and for
        assert ref.build["target_isa"] == "avx2"
        assert ref.build["builder_isa"] in (*ISA_LEVELS, "none")
        assert ref.build["onnxruntime_version"] == importlib.metadata.version("onnxruntime")
    assert int8.build["reduce_range"] is True  # x86-cpu declares avx2: no VNNI


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


def test_engine_checks_ran_with_the_build(packaged) -> None:  # type: ignore[no-untyped-def]
    _, results = packaged
    checks = {c.check_name: c for c in results["x86-cpu|fp32"].get_asset_check_evaluations()}
    assert checks["numerical_equivalence"].passed, checks["numerical_equivalence"].description
    assert "latency_within_budget" in checks
    assert checks["latency_within_budget"].metadata["p95_ms"].value > 0


def test_signed_pack_with_real_triton_contract_smoke(packaged, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from adas.packaging.refs import PackRef
    from adas.packaging.serving import verify_stored_pack
    from adas.packaging.signing import SignatureError

    home, results = packaged
    result = results["pack"]
    assert result.success
    smoke = {c.check_name: c for c in result.get_asset_check_evaluations()}["triton_contract_smoke"]
    assert smoke.passed, smoke.description
    store = LocalArtifactStore(root=str(home.artifacts))
    pack: PackRef = decode_value(
        store.get_bytes("asset-values/model_pack/device=x86-cpu/precision=fp32.json")
    )
    names = set(pack.files)
    for required in (
        "model.onnx",
        "model.pt2",
        "inference_config.json",
        "sbom.cdx.json",
        "license_report.json",
        "vulnerability_scan.json",
        "export_report.json",
        "container/Dockerfile",
        "cosign.pub",
        "pack_manifest.json.sig",
        "model.onnx.sig",
        "export_report.json.sig",
    ):
        assert required in names, required
    assert any(n.startswith("triton/") and n.endswith("config.pbtxt") for n in names)
    assert pack.container_tag == "adas-detector:0.1.0-abcdef0"
    trust = load_trust_file(home.keys / TRUST_FILE)
    assert pack.prefix.startswith("models/vehicle-detection-2d/0.1.0/x86-cpu/fp32/packs/")
    assert "model.onnx" in verify_stored_pack(store, pack, trust, tmp_path / "ok")
    # Tampering behind the store's back is caught by the recorded hash...
    target = home.artifacts / pack.prefix / "inference_config.json"
    original = target.read_text()
    target.write_text(original.replace("0.3", "0.01"))
    with pytest.raises(ArtifactIntegrityError, match=r"inference_config\.json: sha256 mismatch"):
        verify_stored_pack(store, pack, trust, tmp_path / "bad")
    # ...and by the signed manifest even when the attacker also rewrites every hash record and the manifest.
    forged = store.put_bytes(f"{pack.prefix}/inference_config.json", target.read_bytes())
    manifest = json.loads(store.get_bytes(pack.manifest.key))
    manifest["files"]["inference_config.json"] = forged.sha256
    new_manifest = store.put_bytes(pack.manifest.key, json.dumps(manifest).encode())
    forged_pack = pack.model_copy(
        update={"manifest": pack.manifest.model_copy(update={"sha256": new_manifest.sha256})}
    )
    with pytest.raises(SignatureError, match=r"pack_manifest\.json: signature does not match trusted key"):
        verify_stored_pack(store, forged_pack, trust, tmp_path / "forged")
