"""Pod placement of one target in the shape dagster-k8s reads (``dagster-k8s/config``).

Kept apart from ``resources.k8s`` so that code needing only the shape (the simulation shard
Jobs) does not import dagster-k8s when the code location loads.
"""

from typing import Any

from adas.catalog import Target


def placement_k8s_config(target: Target) -> dict[str, Any]:
    """The `dagster-k8s/config` shape (container resources + pod placement) for one target."""
    k8s = target.kubernetes
    limits: dict[str, str] = {"cpu": k8s.cpu, "memory": k8s.memory}
    if k8s.gpu_count:
        limits["nvidia.com/gpu"] = str(k8s.gpu_count)
    return {
        "container_config": {
            "resources": {"requests": {"cpu": k8s.cpu, "memory": k8s.memory}, "limits": limits}
        },
        "pod_spec_config": {
            "node_selector": dict(k8s.node_selector),
            "tolerations": [t.model_dump(exclude_none=True) for t in k8s.tolerations],
        },
    }
