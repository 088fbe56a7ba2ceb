"""The Dagster layer: registry_entry and production_alias per cell, the approve, promote_candidate
and rollback jobs, on a temporary instance (upstream values written where the IO manager reads)."""

from pathlib import Path

import dagster as dg
import pytest

from adas.catalog import load_catalog
from adas.packaging.local_oci_registry import stop_local_registry
from adas.packaging.oci_settings import PORT_ENV, REGISTRY_ENV, OciRegistrySettings
from adas.packaging.triton_server import default_triton_venv, free_port
from adas.registry.config import POLICY_FILE
from adas.registry.models import ROLES
from adas.registry.nginx import nginx_available
from adas.settings import AdasHome
from adas.storage import ArtifactStore, LocalArtifactStore
from adas_assets.evaluation import assets as evaluation
from adas_assets.intake import assets as intake
from adas_assets.packaging import assets as packaging
from adas_assets.partitions import TARGET_PARTITIONS
from adas_assets.registry.assets import registry_assets
from adas_assets.simulation import assets as simulation
from jobs.demo_promotion import promote_demo_candidate
from jobs.registry import registry_jobs
from resources import build_resources
from resources.io_manager import encode_value, value_key
from tests.registry.packs import build_pack, publish_signed, replay_dataset

CELL = "x86-cpu|fp32"
TARGET = "x86-cpu/fp32"


def _definitions(resources: dict) -> dg.Definitions:
    return dg.Definitions(
        assets=[
            *dg.load_assets_from_modules([intake, packaging]),
            *evaluation.evaluation_assets,
            *simulation.simulation_assets,
            *registry_assets,
        ],
        jobs=registry_jobs,
        resources=resources,
    )


def _put_value(store: ArtifactStore, name: str, value: object, partition: str | None = None) -> None:
    key = value_key(dg.AssetKey(name), partition, TARGET_PARTITIONS if partition else None)
    store.put_bytes(key, encode_value(value))


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_models: dict[str, Path]):  # type: ignore[no-untyped-def]
    home = AdasHome(tmp_path / "home").ensure()
    monkeypatch.setenv("ADAS_HOME", str(home.root))
    policy = tmp_path / "policy.yaml"
    text = POLICY_FILE.read_text()
    start, end = text.index("    steps:"), text.index("  shadow:")
    policy.write_text(
        text[:start]
        + "    steps:\n      - {weight: 5, bake_s: 2}\n      - {weight: 50, bake_s: 2}\n      - {weight: 100, bake_s: 2}\n"
        + text[end:].replace("baseline_s: 3.0", "baseline_s: 1.0")
    )
    monkeypatch.setenv("ADAS_REGISTRY_POLICY", str(policy))
    # The local registry on a free port (stopped afterwards): promotion pulls the pinned digest.
    monkeypatch.delenv(REGISTRY_ENV, raising=False)
    monkeypatch.setenv(PORT_ENV, str(free_port()))
    resources = build_resources("local", home)
    store = LocalArtifactStore(home.artifacts)  # where the artifact_store resource keeps them
    prod = build_pack(store, tmp_path / "build", home.keys, "1.2.0", onnx_models["agree"])
    cand = build_pack(store, tmp_path / "build", home.keys, "1.3.0", onnx_models["agree"])
    published = publish_signed(
        store, cand.pack, OciRegistrySettings.from_env("local", home).client(), home.keys
    )
    _put_value(store, "target_catalog", load_catalog())
    _put_value(store, "golden_dataset", replay_dataset(store))
    for name, value in {
        "model_pack": cand.pack,
        "published_pack": published,
        "regression_gate": cand.gate,
        "sim_verdict": cand.sim,
        "eval_report": cand.report,
        "production_engine": prod.pack.engine,
    }.items():
        _put_value(store, name, value, CELL)
    yield home, resources, _definitions(resources), published
    stop_local_registry(home.oci_registry)


def _run_job(
    defs: dg.Definitions, name: str, instance: dg.DagsterInstance, config: dict, partition: str | None = None
):  # type: ignore[no-untyped-def]
    job = defs.resolve_job_def(name)
    return job.execute_in_process(
        run_config=config, instance=instance, partition_key=partition, raise_on_error=False
    )


def _failure(result) -> str:  # type: ignore[no-untyped-def]
    return "\n".join(
        str(e.event_specific_data.error) for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    )


def test_registry_graph_loads() -> None:
    defs = _definitions(build_resources("local", AdasHome(Path("/tmp/unused-adas-home"))))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    entry = graph.get(dg.AssetKey("registry_entry"))
    assert entry.group_name == "registry" and entry.partitions_def == TARGET_PARTITIONS
    assert {k.to_user_string() for k in entry.parent_keys} >= {
        "model_pack",
        "published_pack",
        "regression_gate",
        "sim_verdict",
        "eval_report",
    }
    alias = graph.get(dg.AssetKey("production_alias"))
    assert dg.AssetKey("registry_entry") in alias.parent_keys and alias.automation_condition is None
    assert {j.name for j in registry_jobs} == {"promote_candidate", "rollback", "approve"}


@pytest.mark.slow
@pytest.mark.skipif(
    not (default_triton_venv().exists() and nginx_available()), reason="needs .venv-triton and nginx"
)
def test_register_approve_promote_rollback_through_dagster(world) -> None:  # type: ignore[no-untyped-def]
    _home, resources, defs, published = world
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            list(defs.assets or []),
            selection=["registry_entry"],
            partition_key=CELL,
            resources=resources,
            instance=instance,
        )
        assert result.success
        mat = result.asset_materializations_for_node("registry_entry")[0]
        assert mat.metadata["version"].value == "1.3.0" and mat.metadata["newly_registered"].value is True
        # The entry pins the digest published_pack recorded for this cell.
        assert mat.metadata["oci_reference"].value == published.reference
        assert mat.metadata["adopted_production"].value.endswith("1.2.0")
        assert "# Model card: test-detector 1.3.0" in mat.metadata["model_card"].value
        # Re-materializing is idempotent: same entry, nothing new.
        again = dg.materialize(
            list(defs.assets or []),
            selection=["registry_entry"],
            partition_key=CELL,
            resources=resources,
            instance=instance,
        )
        assert (
            again.asset_materializations_for_node("registry_entry")[0].metadata["newly_registered"].value
            is False
        )

        promote_config = {
            "ops": {"production_alias": {"config": {"actor": "release-manager", "reason": "weekly release"}}}
        }
        refused = _run_job(defs, "promote_candidate", instance, promote_config, CELL)
        assert not refused.success
        message = _failure(refused)
        assert "promotion refused, 4 unmet condition(s)" in message
        for role in ROLES:
            assert f"approval: {role}" in message

        # One approval through the job; then the demo's helper records the rest and promotes.
        approved = _run_job(
            defs,
            "approve",
            instance,
            {
                "ops": {
                    "record_approval": {
                        "config": {"version": "1.3.0", "role": "safety", "actor": "s", "reason": "ok"}
                    }
                }
            },
        )
        assert approved.success, _failure(approved)
        missing_role = _run_job(
            defs,
            "approve",
            instance,
            {
                "ops": {
                    "record_approval": {
                        "config": {"version": "7.0.0", "role": "safety", "actor": "s", "reason": "ok"}
                    }
                }
            },
        )
        assert not missing_role.success and "no registry entry for version '7.0.0'" in _failure(missing_role)

        lines, ok = promote_demo_candidate(defs, instance, cells=[CELL])
        assert ok, lines
        assert lines[0].startswith(
            f"{TARGET}: promoted: 1.3.0 is production on {TARGET}; 1.2.0 is the rollback"
        )
        assert "0 dropped" in lines[0]
        assert "req/s production answered alone" in lines[0], lines[0]  # the shipped policy paces
        assert any("production -> 1.3.0 by demo:release-manager" in line for line in lines)
        promoted = instance.get_latest_materialization_event(dg.AssetKey("production_alias"))
        assert promoted is not None
        alias = promoted.asset_materialization.metadata
        assert alias["production"].value == "1.3.0" and alias["rollback"].value == "1.2.0"
        assert alias["dropped_requests"].value == 0
        assert "release_notes" in alias and "argo_rollout_yaml" in alias

        rollback_config = {"actor": "oncall", "reason": "false braking reports"}
        back = _run_job(
            defs, "rollback", instance, {"ops": {"production_alias": {"config": rollback_config}}}, CELL
        )
        assert back.success, _failure(back)
        alias = back.asset_materializations_for_node("production_alias")[0]
        assert alias.metadata["production"].value == "1.2.0"
        assert alias.metadata["outcome"].value == "rolled_back"
        history = [r.data for r in alias.metadata["history"].value.records]
        moves = [(h["alias"], h["to"], h["actor"]) for h in history]
        assert ("production", "1.2.0", "oncall") in moves
        assert ("production", "1.3.0", "demo:release-manager") in moves
        assert ("production", "1.2.0", "system:adoption") in moves
