"""A promotion plan rendered as an Argo Rollouts ``Rollout`` and its ``AnalysisTemplate``."""

import math
from typing import Any

import yaml

from adas.registry.rollout.plan import PromotionPlan, k8s_name


def render_argo_rollout(
    plan: PromotionPlan,
    *,
    image: str,
    model_repository_uri: str,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    gpu_count: int = 0,
    replicas: int = 4,
    prometheus_address: str = "http://prometheus.monitoring.svc:9090",
    production_interval_s: int = 60,
) -> str:
    """The plan as an Argo Rollouts ``Rollout`` (Istio traffic routing, so 1% is exact) and the
    ``AnalysisTemplate`` it runs in the background from the first step on. "Breached for N
    consecutive intervals" becomes a ``min_over_time`` window of N intervals in each query."""
    a = plan.analysis
    name = k8s_name(plan.model_name, plan.target)
    labels = {"app.kubernetes.io/name": plan.model_name, "adas.dev/target": plan.target.replace("/", "-")}
    window = f"{a.consecutive_breaches * production_interval_s}s"
    steps: list[dict[str, Any]] = []
    managed: list[dict[str, str]] = []
    for s in plan.steps:
        if s.mode == "shadow":
            managed.append({"name": "shadow"})
            steps += [
                {
                    "setMirrorRoute": {
                        "name": "shadow",
                        "percentage": int(s.mirror_percent),
                        "match": [{"method": {"exact": "POST"}}],
                    }
                },
                {"pause": {"duration": f"{int(s.bake_s)}s"}},
                {"setMirrorRoute": {"name": "shadow"}},
            ]
        elif s.mode == "ab":
            managed.append({"name": "cohort-b"})
            steps += [
                {
                    "setHeaderRoute": {
                        "name": "cohort-b",
                        "match": [{"headerName": "X-Cohort", "headerValue": {"exact": "B"}}],
                    }
                },
                {"pause": {"duration": f"{int(s.bake_s)}s"}},
                {"setHeaderRoute": {"name": "cohort-b"}},
            ]
        else:
            steps += [{"setWeight": math.ceil(s.weight)}, {"pause": {"duration": f"{int(s.bake_s)}s"}}]
    container: dict[str, Any] = {
        "name": "triton",
        "image": image,
        "args": [
            "tritonserver",
            f"--model-repository={model_repository_uri}",
            "--strict-readiness=true",
            "--metrics-config=summary_latencies=true",
        ],
        "ports": [
            {"name": "http", "containerPort": 8000},
            {"name": "grpc", "containerPort": 8001},
            {"name": "metrics", "containerPort": 8002},
        ],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": "http"}, "periodSeconds": 5},
    }
    if gpu_count:
        container["resources"] = {"limits": {"nvidia.com/gpu": gpu_count}}
    rollout = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {
                "adas.dev/candidate-version": plan.candidate_version,
                "adas.dev/production-version": plan.production_version or "",
                "adas.dev/strategy": plan.strategy,
            },
        },
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "progressDeadlineSeconds": int(a.progress_deadline_s),
            "progressDeadlineAbort": True,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": node_selector or {},
                    "tolerations": tolerations or [],
                    "containers": [container],
                },
            },
            "strategy": {
                "canary": {
                    "stableService": f"{name}-stable",
                    "canaryService": f"{name}-canary",
                    "abortScaleDownDelaySeconds": 30,
                    "trafficRouting": {
                        "istio": {"virtualService": {"name": name, "routes": ["primary"]}},
                        **({"managedRoutes": managed} if managed else {}),
                    },
                    "analysis": {
                        "templates": [{"templateName": f"{name}-guard"}],
                        "startingStep": 1,
                        "args": [
                            {"name": "canary-service", "value": f"{name}-canary"},
                            {"name": "stable-service", "value": f"{name}-stable"},
                        ],
                    },
                    "steps": steps,
                }
            },
        },
    }
    model = plan.model_name

    def metric(name_: str, query: str, success: str) -> dict[str, Any]:
        return {
            "name": name_,
            "interval": f"{production_interval_s}s",
            "failureLimit": max(a.failure_limit - 1, 0),
            "inconclusiveLimit": a.inconclusive_limit,
            "successCondition": success,
            "provider": {"prometheus": {"address": prometheus_address, "query": query}},
        }

    p95 = 'max(nv_inference_request_summary_us{{model="{m}",quantile="0.95",service="{{{{args.{svc}}}}}"}})'
    analysis = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": f"{name}-guard", "labels": labels},
        "spec": {
            "args": [{"name": "canary-service"}, {"name": "stable-service"}],
            "metrics": [
                metric(
                    "p95-latency-ratio",
                    f"min_over_time(({p95.format(m=model, svc='canary-service')} / "
                    f"{p95.format(m=model, svc='stable-service')})[{window}:])",
                    f"isNaN(result[0]) || result[0] <= {a.max_p95_latency_ratio}",
                ),
                metric(
                    "error-rate",
                    f'min_over_time((sum(rate(nv_inference_request_failure{{model="{model}",service="{{{{args.canary-service}}}}"}}[1m])) '
                    f'/ sum(rate(nv_inference_count{{model="{model}",service="{{{{args.canary-service}}}}"}}[1m])))[{window}:])',
                    f"isNaN(result[0]) || result[0] <= {a.max_error_rate}",
                ),
                metric(
                    "disagreement",
                    f'min_over_time(adas_candidate_disagreement_ratio{{model="{model}",service="{{{{args.canary-service}}}}"}}[{window}])',
                    f"isNaN(result[0]) || result[0] <= {a.max_disagreement}",
                ),
            ],
        },
    }
    return yaml.safe_dump_all([rollout, analysis], sort_keys=False)
