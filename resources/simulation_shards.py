"""Where closed-loop simulation shards run: local processes, or one Kubernetes Job per shard.

``SimulationShardRunner`` is the one switch, built per environment in ``resources.build_resources``:
``mode="local"`` gives ``LocalProcessExecutor`` (the asset's ``processes``); ``mode="k8s"``
(production) gives a ``RemoteShardExecutor`` whose launcher runs each shard as a Kubernetes Job
through ``dagster_k8s.execute_k8s_job``: the store form of the shard command

    python -m adas.simulation.orchestration --spec-key sim-cache/specs/<shard key>.json \\
        --engine-key <engine key> --engine-sha256 <hex>

in the run's own image, on the partition's device nodes (``resources.placement.placement_k8s_config``:
node selector, tolerations, GPU limit) with one shard's CPU and memory, and the environment the
pod needs to open the same artifact store. ``run_sweep`` still plans, reuses checkpoints,
reports progress and raises ``SweepError``; the pods only compute and checkpoint.

``shard_job_kwargs`` is the one function that makes a shard's Job settings (the arguments of
``execute_k8s_job``); ``preview_shard_job`` builds the ``V1Job`` from them the way
``execute_k8s_job`` does, without a cluster (tests, ``kubectl apply --dry-run``).

Settings left unset fall back to the run launcher's (namespace, service account, env secrets and
config maps: ``execute_k8s_job`` merges the ``K8sRunLauncher`` configuration in) and to the run's
image (``DAGSTER_CURRENT_IMAGE``, set by dagster-k8s in run and step pods).
"""

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import dagster as dg
from pydantic import Field

from adas.catalog import Target
from adas.simulation.executors import SHARD_MODULE, LocalProcessExecutor, RemoteShardExecutor, ShardExecutor
from adas.simulation.shards import ShardSpec
from resources.placement import placement_k8s_config
from resources.targets import TARGET_CATALOG

if TYPE_CHECKING:
    import kubernetes

SHARD_PYTHON = "python"
# What a shard pod needs to open the artifact store the run uses (resources.build_artifact_store).
FORWARDED_ENV = (
    "ADAS_ENV",
    "ADAS_ARTIFACT_BUCKET",
    "ADAS_ARTIFACT_PREFIX",
    "AWS_REGION",
    "ADAS_S3_ENDPOINT_URL",
)
SHARD_ENV = {"SDL_VIDEODRIVER": "offscreen", "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
_POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ShardSetupError(RuntimeError):
    """The shard runner cannot launch anything (no image, unknown device)."""


class SimulationShardRunner(dg.ConfigurableResource):
    """Runs the shards of a closed-loop sweep: local processes or Kubernetes Jobs (see module doc)."""

    mode: Literal["local", "k8s"] = Field(
        default="local", description="local: local processes; k8s: one Kubernetes Job per shard"
    )
    namespace: str | None = Field(
        default=None,
        description="k8s: namespace of the shard Jobs (unset: this pod's, else the run launcher's)",
    )
    image: str | None = Field(
        default=None,
        description="k8s: image of the shard pods (unset: the run's own, $DAGSTER_CURRENT_IMAGE)",
    )
    image_pull_policy: str | None = None
    service_account_name: str | None = Field(
        default=None, description="k8s: service account of the shard pods (unset: the run launcher's)"
    )
    env_secrets: list[str] = Field(
        default_factory=list, description="k8s: Secrets added to the pods' environment (envFrom)"
    )
    env_config_maps: list[str] = Field(
        default_factory=list, description="k8s: ConfigMaps added to the pods' environment (envFrom)"
    )
    max_parallel_pods: int = Field(
        default=16, ge=1, le=1024, description="k8s: shard Jobs at a time per sweep"
    )
    shard_cpu: str = Field(default="1", description="k8s: CPU request and limit of a shard pod")
    shard_memory: str = Field(default="2Gi", description="k8s: memory request and limit of a shard pod")
    timeout_s: int = Field(default=4 * 3600, ge=60, description="k8s: a shard Job's deadline")
    backoff_limit: int = Field(default=1, ge=0, le=10, description="k8s: pod retries of a shard Job")

    def executor(self, context: Any, device: str, processes: int = 2) -> ShardExecutor:
        """The executor for one sweep of the partition's ``device`` (``context``: the asset's)."""
        if self.mode == "local":
            return LocalProcessExecutor(processes=processes)
        try:
            target = TARGET_CATALOG.target(device)
        except KeyError as exc:
            raise ShardSetupError(str(exc)) from exc
        image = self.image or os.environ.get("DAGSTER_CURRENT_IMAGE")
        if not image:
            raise ShardSetupError(
                "no image for the simulation shard pods: set ADAS_SIM_SHARD_IMAGE (SimulationShardRunner.image) "
                "or run under dagster-k8s, which sets DAGSTER_CURRENT_IMAGE"
            )
        namespace = self.namespace or _pod_namespace()
        launcher = KubernetesShardLauncher(
            context=context, runner=self, target=target, device=device, image=image, namespace=namespace
        )
        where = f"Kubernetes Jobs in namespace {namespace or '(run launcher default)'} on {device} nodes"
        return RemoteShardExecutor(launch=launcher, max_parallel=self.max_parallel_pods, where=where)


def _pod_namespace() -> str | None:
    try:
        return _POD_NAMESPACE_FILE.read_text().strip() or None
    except OSError:
        return None


def shard_job_name(run_id: str, spec: ShardSpec) -> str:
    """A valid, unique-per-run Job name (dagster-k8s appends ``-<retry>`` on step retries)."""
    return f"adas-sim-{run_id[:8]}-{spec.key[:16]}".lower()


def shard_job_kwargs(
    runner: SimulationShardRunner,
    *,
    target: Target,
    device: str,
    spec: ShardSpec,
    args: Sequence[str],
    image: str,
    job_name: str,
    namespace: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``execute_k8s_job`` arguments for one shard: the one place a shard pod is described."""
    environ = os.environ if environ is None else environ
    placement = placement_k8s_config(target)
    device_resources = placement["container_config"]["resources"]
    shard = {"cpu": runner.shard_cpu, "memory": runner.shard_memory}
    # The device's extended resources (nvidia.com/gpu) stay; CPU and memory are one shard's.
    requests = {**device_resources.get("requests", {}), **shard}
    limits = {**device_resources.get("limits", {}), **shard}
    env = {"ADAS_ENV": "production", **{k: environ[k] for k in FORWARDED_ENV if environ.get(k)}, **SHARD_ENV}
    return {
        "image": image,
        "command": [SHARD_PYTHON, "-m", SHARD_MODULE],
        "args": list(args),
        "namespace": namespace,
        "image_pull_policy": runner.image_pull_policy,
        "service_account_name": runner.service_account_name,
        "env_vars": [f"{k}={v}" for k, v in env.items()],
        "env_secrets": list(runner.env_secrets) or None,
        "env_config_maps": list(runner.env_config_maps) or None,
        "labels": {
            "app.kubernetes.io/part-of": "adas",
            "adas.dev/component": "simulation-shard",
            "adas.dev/device": device,
            "adas.dev/shard-key": spec.key[:16],
        },
        "container_config": {"resources": {"requests": requests, "limits": limits}},
        "pod_spec_config": placement["pod_spec_config"],
        "job_spec_config": {
            "backoff_limit": runner.backoff_limit,
            "active_deadline_seconds": runner.timeout_s,
            "ttl_seconds_after_finished": 24 * 3600,
        },
        "timeout": runner.timeout_s,
        "k8s_job_name": job_name,
    }


def preview_shard_job(kwargs: Mapping[str, Any]) -> "kubernetes.client.V1Job":
    """The ``V1Job`` that ``execute_k8s_job(context, **kwargs)`` creates, less the run launcher's settings."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        K8sConfigMergeBehavior,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
    )

    container_config = dict(kwargs.get("container_config") or {})
    if kwargs.get("command"):
        container_config["command"] = kwargs["command"]
    context = K8sContainerContext().merge(
        K8sContainerContext(
            image_pull_policy=kwargs.get("image_pull_policy"),
            service_account_name=kwargs.get("service_account_name"),
            env_config_maps=kwargs.get("env_config_maps"),
            env_secrets=kwargs.get("env_secrets"),
            env_vars=kwargs.get("env_vars"),
            labels=kwargs.get("labels"),
            namespace=kwargs.get("namespace"),
            run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
                {
                    "container_config": container_config,
                    "pod_spec_config": kwargs.get("pod_spec_config"),
                    "job_spec_config": kwargs.get("job_spec_config"),
                    "merge_behavior": K8sConfigMergeBehavior.DEEP.value,
                }
            ),
        )
    )
    name = kwargs["k8s_job_name"]
    return construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=kwargs["image"], dagster_home=None),
        args=kwargs.get("args"),
        job_name=name,
        pod_name=name,
        component="k8s_job_op",
        user_defined_k8s_config=context.run_k8s_config,
    )


@dataclass(frozen=True)
class KubernetesShardLauncher:
    """Launches one shard as a Kubernetes Job and waits for it (``execute_k8s_job`` raises on failure)."""

    context: Any
    runner: SimulationShardRunner
    target: Target
    device: str
    image: str
    namespace: str | None

    def kwargs(self, spec: ShardSpec, args: Sequence[str]) -> dict[str, Any]:
        op_context = getattr(self.context, "op_execution_context", self.context)
        return shard_job_kwargs(
            self.runner,
            target=self.target,
            device=self.device,
            spec=spec,
            args=args,
            image=self.image,
            job_name=shard_job_name(op_context.run_id, spec),
            namespace=self.namespace,
        )

    def __call__(self, spec: ShardSpec, args: list[str]) -> None:
        from dagster_k8s import execute_k8s_job

        op_context = getattr(self.context, "op_execution_context", self.context)
        kwargs = self.kwargs(spec, args)
        op_context.log.info(f"shard {spec.shard_index}: Kubernetes Job {kwargs['k8s_job_name']}")
        execute_k8s_job(op_context, **kwargs)
