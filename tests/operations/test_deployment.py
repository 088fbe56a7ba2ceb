"""Production-shaped configuration: Kubernetes placement from the catalog, instance configs, PostgreSQL."""

import os
import shutil
import uuid
from pathlib import Path

import dagster as dg
import psycopg2
import pytest
import yaml
from dagster_k8s import DagsterK8sJobConfig, construct_dagster_k8s_job

from adas.catalog import load_catalog
from resources.k8s import DEVICE_TAG, CatalogK8sRunLauncher, container_context_for_tags
from resources.placement import placement_k8s_config

REPO = Path(__file__).resolve().parents[2]
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def _job_for(tags: dict[str, str]):  # type: ignore[no-untyped-def]
    context = container_context_for_tags(tags, load_catalog())
    return construct_dagster_k8s_job(
        DagsterK8sJobConfig(job_image="registry.example/adas:1.0", dagster_home="/opt/dagster/dagster_home"),
        ["dagster", "api", "execute_run"],
        "dagster-run-test",
        user_defined_k8s_config=context.run_k8s_config,
    )


def test_gpu_partition_job_spec_has_limits_selectors_and_tolerations() -> None:
    job = _job_for({DEVICE_TAG: "t4", "dagster/partition/precision": "int8"})
    pod = job.spec.template.spec
    container = pod.containers[0]
    assert container.resources.limits["nvidia.com/gpu"] == "1"
    assert pod.node_selector["node.kubernetes.io/instance-type"] == "g4dn.xlarge"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.tolerations)

    orin = _job_for({DEVICE_TAG: "orin"}).spec.template.spec
    assert orin.node_selector["kubernetes.io/arch"] == "arm64"
    assert {t.key for t in orin.tolerations} == {"nvidia.com/gpu", "adas.dev/edge-hil"}


def test_cpu_partition_gets_no_gpu_and_unpartitioned_runs_are_untouched() -> None:
    cpu = _job_for({DEVICE_TAG: "x86-cpu"}).spec.template.spec
    assert "nvidia.com/gpu" not in (cpu.containers[0].resources.limits or {})
    assert cpu.node_selector["adas.dev/pool"] == "cpu-inference"
    plain = _job_for({}).spec.template.spec
    assert not plain.node_selector and not plain.tolerations


def test_every_catalog_target_renders_a_placement() -> None:
    for device, target in load_catalog().targets.items():
        cfg = placement_k8s_config(target)
        gpus = cfg["container_config"]["resources"]["limits"].get("nvidia.com/gpu")
        assert (gpus == str(target.kubernetes.gpu_count)) if target.needs_gpu else gpus is None, device


def test_catalog_launcher_merges_placement_into_run_context(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    launcher = CatalogK8sRunLauncher(
        service_account_name="dagster",
        instance_config_map="dagster-instance",
        dagster_home="/opt/dagster/dagster_home",
        job_image="registry.example/adas:1.0",
        load_incluster_config=False,
        kubeconfig_file=str(kubeconfig),
    )
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id=str(uuid.uuid4()), tags={DEVICE_TAG: "a100"})
    context = launcher.get_container_context_for_run(run)
    assert context.run_k8s_config.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert (
        context.run_k8s_config.pod_spec_config["node_selector"]["node.kubernetes.io/instance-type"]
        == "p4d.24xlarge"
    )


def test_instance_configs_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "local"
    local.mkdir()
    shutil.copyfile(REPO / "deploy/local/dagster.yaml", local / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(local)) as instance:
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1
    prod = yaml.safe_load((REPO / "deploy/production/dagster.yaml").read_text())
    assert prod["run_launcher"]["class"] == "CatalogK8sRunLauncher"
    assert "postgres" in prod["storage"]


@pytest.fixture
def postgres_db() -> str:
    name = f"adas_test_{uuid.uuid4().hex[:8]}"
    try:
        conn = psycopg2.connect(PG_DSN)
    except psycopg2.OperationalError as exc:  # CI always has it; say so plainly if not
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for this test: {exc}")
    conn.autocommit = True
    conn.cursor().execute(f"CREATE DATABASE {name}")
    yield name
    conn.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


def test_real_materialization_with_postgres_instance_storage(
    postgres_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "postgres": {
                        "postgres_db": {
                            "hostname": "127.0.0.1",
                            "port": 5432,
                            "username": "postgres",
                            "password": "",
                            "db_name": postgres_db,
                        }
                    }
                },
                "telemetry": {"enabled": False},
            }
        )
    )
    monkeypatch.setenv("ADAS_HOME", str(tmp_path / "adas"))
    from adas.settings import AdasHome
    from adas_assets.intake.assets import target_catalog
    from resources import build_resources

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize(
            [target_catalog],
            instance=instance,
            resources=build_resources("local", AdasHome(tmp_path / "adas")),
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey("target_catalog"))
        assert event is not None and event.asset_materialization.metadata["supported_cells"].value == len(
            load_catalog().supported_pairs()
        )
    assert os.environ["ADAS_HOME"].endswith("adas")


def test_helm_values_wire_the_catalog_launcher_postgres_and_s3() -> None:
    import importlib

    values = yaml.safe_load((REPO / "deploy/helm/values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["customRunLauncher"]
    assert getattr(importlib.import_module(launcher["module"]), launcher["class"]) is CatalogK8sRunLauncher
    assert values["postgresql"]["enabled"] is False and values["postgresql"]["postgresqlHost"]
    assert values["computeLogManager"]["type"] == "S3ComputeLogManager"
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", "adas_assets.definitions"]
    assert {"name": "ADAS_ENV", "value": "production"} in deployment["env"]
