"""Simulation shards as Kubernetes Jobs (dagster-k8s): the Job spec, the pod contract, failures.

No cluster exists here, so the Job a shard would get is built with dagster-k8s's own
``construct_dagster_k8s_job`` from the same arguments the executor hands ``execute_k8s_job``, and
the pod's command is run for real (a subprocess) against a local artifact store.
"""

import inspect
import io
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from adas.catalog import load_catalog
from adas.datasets.generator import DatagenConfig
from adas.settings import REPO_ROOT, AdasHome
from adas.simulation.config import SimulationConfig
from adas.simulation.executors import (
    SHARD_MODULE,
    EngineFile,
    LocalProcessExecutor,
    RemoteShardExecutor,
    shard_args,
    shard_spec_key,
)
from adas.simulation.orchestration import main
from adas.simulation.perception import PerceptionSpec
from adas.simulation.planning import plan_category, plan_runs
from adas.simulation.shards import CHECKPOINT_PREFIX, EpisodeSettings, ShardSpec, load_checkpoint, make_shards
from adas.simulation.sweep import SweepError, run_sweep
from adas.storage import LocalArtifactStore
from resources import build_resources
from resources.simulation_shards import (
    KubernetesShardLauncher,
    ShardSetupError,
    SimulationShardRunner,
    preview_shard_job,
    shard_job_kwargs,
    shard_job_name,
)

IMAGE = "registry.example.com/adas-assets:0.1.0"
RUN_ID = "0123abcd-4567-89ef-0123-456789abcdef"
ENGINE_KEY = "models/detection-2d/1.2.0/x86-cpu/fp32/model.onnx"
PRODUCTION_ENV = {
    "ADAS_ENV": "production",
    "ADAS_ARTIFACT_BUCKET": "adas-artifacts",
    "ADAS_ARTIFACT_PREFIX": "gold",
    "AWS_REGION": "eu-central-1",
    "ADAS_S3_ENDPOINT_URL": "https://s3.eu-central-1.amazonaws.com",
    "AWS_SECRET_ACCESS_KEY": "must-not-be-forwarded",
}


def _settings(sim_cfg: SimulationConfig, datagen: DatagenConfig) -> EpisodeSettings:
    return EpisodeSettings.from_configs(sim_cfg, datagen)


def _job(runner: SimulationShardRunner, device: str, spec: ShardSpec, engine: EngineFile, environ=None):  # type: ignore[no-untyped-def]
    kwargs = shard_job_kwargs(
        runner,
        target=load_catalog().target(device),
        device=device,
        spec=spec,
        args=shard_args(spec, engine),
        image=IMAGE,
        job_name=shard_job_name(RUN_ID, spec),
        namespace="adas-sim",
        environ=PRODUCTION_ENV if environ is None else environ,
    )
    return kwargs, preview_shard_job(kwargs)


def _run_pod(job, home: Path) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    """What the pod's container would run, here, against a local store under ``home``."""
    (container,) = job.spec.template.spec.containers
    env = {**os.environ, **{e.name: e.value for e in container.env}}
    for name in ("ADAS_ARTIFACT_BUCKET", "ADAS_ARTIFACT_PREFIX", "ADAS_S3_ENDPOINT_URL"):
        env.pop(name, None)
    env.update({"ADAS_ENV": "local", "ADAS_HOME": str(home)})
    python, *rest = container.command
    cmd = [sys.executable if python == "python" else python, *rest, *container.args]
    return subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=240)


def _comparable(records) -> list[dict]:  # type: ignore[no-untyped-def]
    return [r.model_dump(mode="json", exclude={"wall_s", "cpu_s"}) for r in records]


def _summary_bytes(records) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    pl.DataFrame([r.row() for r in records], infer_schema_length=None).write_parquet(buf)
    return buf.getvalue()


# ------------------------------------------------------------------------------- the Job spec


@pytest.mark.parametrize(
    ("cell", "gpu"),
    [("t4|int8", True), ("x86-cpu|fp32", False)],
)
def test_a_shard_job_places_the_pod_on_the_cells_device(
    cell: str, gpu: bool, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    device = cell.split("|")[0]
    target = load_catalog().target(device)
    sha = "ab" * 32
    perception = PerceptionSpec(label="candidate", kind="engine", engine_sha256=sha)
    runs = plan_category(sim_cfg, "cut_in", 2)
    spec = make_shards(runs, perception, _settings(sim_cfg, datagen), 2)[1]
    runner = SimulationShardRunner(
        mode="k8s",
        service_account_name="dagster",
        env_secrets=["adas-secrets"],
        env_config_maps=["adas-config"],
        backoff_limit=2,
        timeout_s=3600,
    )
    engine = EngineFile(key=ENGINE_KEY, sha256=sha)
    kwargs, job = _job(runner, device, spec, engine)

    assert job.metadata.name == f"adas-sim-0123abcd-{spec.key[:16]}" and len(job.metadata.name) <= 63
    assert job.spec.backoff_limit == 2 and job.spec.active_deadline_seconds == 3600
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never" and pod.service_account_name == "dagster"
    (container,) = pod.containers
    assert container.image == IMAGE
    assert container.command == ["python", "-m", SHARD_MODULE]
    assert container.args == [
        "--spec-key",
        f"sim-cache/specs/{spec.key}.json",
        "--engine-key",
        ENGINE_KEY,
        "--engine-sha256",
        sha,
    ]
    assert container.resources.requests == {"cpu": "1", "memory": "2Gi"}
    env = {e.name: e.value for e in container.env}
    for name in (
        "ADAS_ENV",
        "ADAS_ARTIFACT_BUCKET",
        "ADAS_ARTIFACT_PREFIX",
        "AWS_REGION",
        "ADAS_S3_ENDPOINT_URL",
    ):
        assert env[name] == PRODUCTION_ENV[name]
    assert "AWS_SECRET_ACCESS_KEY" not in env, "secrets come from env_secrets, never inlined"
    assert env["SDL_VIDEODRIVER"] == "offscreen"
    assert [s.secret_ref.name for s in container.env_from if s.secret_ref] == ["adas-secrets"]
    assert [s.config_map_ref.name for s in container.env_from if s.config_map_ref] == ["adas-config"]
    assert pod.node_selector == target.kubernetes.node_selector
    tolerations = [(t.key, t.operator, t.effect) for t in pod.tolerations or []]
    if gpu:
        assert container.resources.limits == {"cpu": "1", "memory": "2Gi", "nvidia.com/gpu": "1"}
        assert ("nvidia.com/gpu", "Exists", "NoSchedule") in tolerations
    else:
        assert container.resources.limits == {"cpu": "1", "memory": "2Gi"}
        assert tolerations == []
    assert job.spec.template.metadata.labels["adas.dev/device"] == device

    # These are exactly the arguments the executor passes to dagster-k8s's execute_k8s_job.
    from dagster_k8s import execute_k8s_job

    inspect.signature(execute_k8s_job).bind(object(), **kwargs)
    launcher = KubernetesShardLauncher(
        context=_FakeOpContext(RUN_ID),
        runner=runner,
        target=target,
        device=device,
        image=IMAGE,
        namespace="adas-sim",
    )
    with pytest.MonkeyPatch.context() as mp:
        for k, v in PRODUCTION_ENV.items():
            mp.setenv(k, v)
        assert launcher.kwargs(spec, shard_args(spec, engine)) == kwargs


class _FakeOpContext:
    """Only what KubernetesShardLauncher.kwargs reads (the run id); no Job is launched with it."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


def test_the_resource_picks_the_executor_per_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    local = build_resources("local", AdasHome(tmp_path))["sim_shards"]
    assert local.mode == "local"
    executor = local.executor(None, "x86-cpu", processes=3)
    assert isinstance(executor, LocalProcessExecutor) and executor.processes == 3

    monkeypatch.setenv("ADAS_K8S_NAMESPACE", "adas-sim")
    monkeypatch.setenv("ADAS_SIM_MAX_PARALLEL_PODS", "40")
    monkeypatch.setenv("ADAS_K8S_ENV_SECRETS", "adas-secrets, aws-creds")
    monkeypatch.delenv("DAGSTER_CURRENT_IMAGE", raising=False)
    monkeypatch.delenv("ADAS_SIM_SHARD_IMAGE", raising=False)
    prod = build_resources("production")["sim_shards"]
    assert prod.mode == "k8s" and prod.namespace == "adas-sim" and prod.max_parallel_pods == 40
    assert prod.env_secrets == ["adas-secrets", "aws-creds"]
    with pytest.raises(ShardSetupError, match="DAGSTER_CURRENT_IMAGE"):
        prod.executor(_FakeOpContext(RUN_ID), "t4")
    monkeypatch.setenv("DAGSTER_CURRENT_IMAGE", IMAGE)
    remote = prod.executor(_FakeOpContext(RUN_ID), "t4")
    assert isinstance(remote, RemoteShardExecutor) and remote.max_parallel == 40
    assert isinstance(remote.launch, KubernetesShardLauncher) and remote.launch.image == IMAGE
    assert "namespace adas-sim on t4 nodes" in remote.describe()


# ------------------------------------------------------------------------------- the pod contract


def test_the_pod_command_checkpoints_into_the_store_and_the_sweep_reuses_it(
    tmp_path: Path,
    sim_cfg: SimulationConfig,
    datagen: DatagenConfig,
    plumbing_engine,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real shard through the pod's command, then the Kubernetes executor path, vs a local run."""
    onnx, contract = plumbing_engine
    home = AdasHome(tmp_path / "adas")
    store = LocalArtifactStore(root=str(home.artifacts))
    sha = store.put_file(ENGINE_KEY, onnx).sha256
    perception = PerceptionSpec(label="candidate", kind="engine", engine_sha256=sha, contract=contract)
    settings = _settings(sim_cfg, datagen)
    runs = plan_runs(sim_cfg, "smoke")  # one cut-in, one stopped lead, 8 s each
    specs = make_shards(runs, perception, settings, 2)
    assert len(specs) == 2
    engine = EngineFile(key=ENGINE_KEY, sha256=sha)
    runner = SimulationShardRunner(mode="k8s")

    # 1. Shard 0's pod, by hand: the spec in the store, then the Job's container command.
    _, job0 = _job(runner, "x86-cpu", specs[0], engine, environ={})
    store.put_bytes(shard_spec_key(specs[0]), specs[0].model_dump_json().encode())
    proc = _run_pod(job0, home.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = load_checkpoint(store, specs[0].key)
    assert done is not None and [r.spec.run_id for r in done.records] == [specs[0].runs[0].run_id]
    result_json = store.get_bytes(f"{CHECKPOINT_PREFIX}/{specs[0].key}/result.json")

    # 2. The sweep through the Kubernetes executor: shard 0 is reused, shard 1 goes to a "pod".
    #    The launch runs the real Job's container command here (the cluster is the only stand-in).
    launched: list[int] = []

    def kubelet(spec: ShardSpec, args: list[str]) -> None:
        launched.append(spec.shard_index)
        kwargs, job = _job(runner, "x86-cpu", spec, engine, environ={})
        assert kwargs["args"] == args
        proc = _run_pod(job, home.root)
        if proc.returncode != 0:
            raise RuntimeError(f"pod failed: {proc.stderr.strip().splitlines()[-1]}")

    pods = run_sweep(
        store,
        runs,
        perception,
        settings,
        engine_key=ENGINE_KEY,
        shards=2,
        executor=RemoteShardExecutor(launch=kubelet, max_parallel=2, where="test pods"),
    )
    assert launched == [1]
    assert pods.shards_reused == [0] and pods.shards_computed == [1]
    assert [r.spec.run_id for r in pods.records] == [r.run_id for r in runs]

    # 3. The pod is idempotent: a second launch of a finished shard exits 0 and changes nothing
    #    (in this process: the command itself was proven above, and a subprocess costs ~7 s of imports).
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ADAS_ENV", "local")
        mp.setenv("ADAS_HOME", str(home.root))
        assert main(job0.spec.template.spec.containers[0].args) == 0
    assert "already checkpointed, nothing to do" in capsys.readouterr().out
    assert store.get_bytes(f"{CHECKPOINT_PREFIX}/{specs[0].key}/result.json") == result_json

    # 4. Bit for bit what local processes compute on the same seeds: records, summary, clips.
    local_store = LocalArtifactStore(root=str(tmp_path / "local"))
    local = run_sweep(local_store, runs, perception, settings, engine_path=onnx, shards=2, processes=1)
    assert local.shards_computed == [0, 1]
    assert _comparable(pods.records) == _comparable(local.records)
    assert _summary_bytes(pods.records) == _summary_bytes(local.records)
    assert pods.clip_keys == local.clip_keys and pods.clip_keys, "the blind engine must produce failure clips"
    for key in local.clip_keys.values():
        assert store.get_bytes(key) == local_store.get_bytes(key)


# ------------------------------------------------------------------------------- failures


def test_a_wrong_engine_sha256_exits_non_zero_naming_it(
    tmp_path: Path,
    sim_cfg: SimulationConfig,
    datagen: DatagenConfig,
    plumbing_engine,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    onnx, contract = plumbing_engine
    home = AdasHome(tmp_path / "adas")
    monkeypatch.setenv("ADAS_ENV", "local")
    monkeypatch.setenv("ADAS_HOME", str(home.root))
    store = LocalArtifactStore(root=str(home.artifacts))
    sha = store.put_file(ENGINE_KEY, onnx).sha256
    perception = PerceptionSpec(label="candidate", kind="engine", engine_sha256=sha, contract=contract)
    (spec,) = make_shards(plan_category(sim_cfg, "cut_in", 1), perception, _settings(sim_cfg, datagen), 1)
    store.put_bytes(shard_spec_key(spec), spec.model_dump_json().encode())
    wrong = "0" * 64
    _, job = _job(
        SimulationShardRunner(mode="k8s"), "x86-cpu", spec, EngineFile(key=ENGINE_KEY, sha256=wrong)
    )
    assert main(job.spec.template.spec.containers[0].args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"shard command: engine {ENGINE_KEY} does not match --engine-sha256 {wrong}")
    assert "sha256 mismatch" in line
    assert load_checkpoint(store, spec.key) is None


def test_a_missing_spec_or_engine_exits_non_zero_naming_it(
    tmp_path: Path,
    sim_cfg: SimulationConfig,
    datagen: DatagenConfig,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    home = AdasHome(tmp_path / "adas")
    monkeypatch.setenv("ADAS_ENV", "local")
    monkeypatch.setenv("ADAS_HOME", str(home.root))
    assert main(["--spec-key", "sim-cache/specs/nope.json"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no shard spec at --spec-key sim-cache/specs/nope.json" in err

    store = LocalArtifactStore(root=str(home.artifacts))
    perception = PerceptionSpec(label="candidate", kind="engine", engine_sha256="cd" * 32)
    (spec,) = make_shards(plan_category(sim_cfg, "cut_in", 1), perception, _settings(sim_cfg, datagen), 1)
    store.put_bytes(shard_spec_key(spec), spec.model_dump_json().encode())
    args = shard_args(spec, EngineFile(key="models/missing.onnx", sha256="cd" * 32))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no engine at --engine-key models/missing.onnx" in err
    with pytest.raises(ValueError, match="needs the engine's store key"):
        shard_args(spec, EngineFile(path="/tmp/model.onnx"))


def test_a_pod_that_succeeds_without_a_checkpoint_fails_the_sweep_naming_the_shard(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig
) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    oracle = PerceptionSpec(label="production", kind="oracle")
    runs = plan_category(sim_cfg, "cut_in", 2)
    calls: list[list[str]] = []

    def exits_zero_writes_nothing(spec: ShardSpec, args: list[str]) -> None:
        calls.append(args)  # the stand-in for a cluster: a Job that "succeeded" and wrote nothing

    executor = RemoteShardExecutor(launch=exits_zero_writes_nothing, max_parallel=4)
    with pytest.raises(SweepError) as info:
        run_sweep(store, runs, oracle, _settings(sim_cfg, datagen), shards=2, executor=executor)
    specs = make_shards(runs, oracle, _settings(sim_cfg, datagen), 2)
    msg = str(info.value)
    for spec in specs:
        assert (
            f"shard {spec.shard_index}: MissingCheckpointError: the shard command exited 0 but left no "
            f"checkpoint at {CHECKPOINT_PREFIX}/{spec.key}/result.json"
        ) in msg
    assert "0 of 2 are checkpointed" in msg
    assert sorted(calls) == sorted([["--spec-key", shard_spec_key(s)] for s in specs])
    for spec in specs:  # the specs were uploaded for the pods to read
        assert ShardSpec.model_validate_json(store.get_bytes(shard_spec_key(spec))) == spec


def test_in_a_dagster_run_each_shard_reaches_execute_k8s_job(
    tmp_path: Path, sim_cfg: SimulationConfig, datagen: DatagenConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No stand-in: a real asset context, the k8s runner, dagster-k8s's execute_k8s_job for every
    shard, which builds the Job and stops where it needs a cluster (no in-cluster config here)."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(name, raising=False)
    store = LocalArtifactStore(root=str(tmp_path / "store"))
    oracle = PerceptionSpec(label="production", kind="oracle")
    runs = plan_category(sim_cfg, "cut_in", 2)
    settings = _settings(sim_cfg, datagen)
    seen: list[str] = []

    @dg.asset
    def sweep(context: dg.AssetExecutionContext, sim_shards: SimulationShardRunner) -> None:
        executor = sim_shards.executor(context, "x86-cpu")
        assert isinstance(executor, RemoteShardExecutor)
        try:
            run_sweep(store, runs, oracle, settings, shards=2, executor=executor, progress=context.log.info)
        except SweepError as exc:
            seen.append(str(exc))

    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [sweep],
            resources={"sim_shards": SimulationShardRunner(mode="k8s", image=IMAGE, namespace="adas-sim")},
            instance=instance,
        )
        logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert result.success
    (msg,) = seen
    assert "shard 0: ConfigException: Service host/port is not set" in msg
    assert "shard 1: ConfigException: Service host/port is not set" in msg
    for spec in make_shards(runs, oracle, settings, 2):
        assert store.exists(shard_spec_key(spec))
    assert any(f"Kubernetes Job adas-sim-{result.run_id[:8]}-" in m for m in logs)
