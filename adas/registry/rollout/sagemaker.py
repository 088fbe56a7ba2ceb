"""A promotion plan rendered as an AWS SageMaker endpoint deployment: variants, traffic steps,
blue/green update with CloudWatch alarms for auto-rollback."""

from typing import Any

from adas.registry.rollout.plan import PromotionPlan, k8s_name

_SAGEMAKER_INSTANCE = {
    "t4": "ml.g4dn.xlarge",
    "a10g": "ml.g5.xlarge",
    "a100": "ml.p4d.24xlarge",
    "h100": "ml.p5.48xlarge",
}


def render_sagemaker_deployment(
    plan: PromotionPlan,
    *,
    image: str,
    model_data_url: str,
    execution_role_arn: str = "arn:aws:iam::123456789012:role/adas-sagemaker-execution",
    capture_s3_uri: str = "s3://adas-artifacts/rollouts/data-capture",
    instance_count: int = 2,
    production_interval_s: int = 60,
) -> dict[str, Any]:
    """The plan as SageMaker API payloads: the candidate model, an endpoint config with the
    production and candidate variants (or a shadow variant), one
    ``UpdateEndpointWeightsAndCapacities`` per step with its bake time and the alarms that must
    stay OK, the final blue/green ``UpdateEndpoint`` with auto-rollback alarms, and the
    CloudWatch alarms themselves (``PutMetricAlarm`` payloads)."""
    a = plan.analysis
    device = plan.target.split("/")[0]
    base = k8s_name(plan.model_name, plan.target)
    if device == "orin":
        return {
            "applicable": False,
            "reason": "orin is a vehicle ECU: deployed over the air to the fleet, not to a SageMaker endpoint",
        }
    instance = _SAGEMAKER_INSTANCE.get(device, "ml.c5.2xlarge")
    cand_variant = k8s_name("candidate", plan.candidate_version)
    prod_variant = k8s_name("production", plan.production_version or "none")
    cand_model = k8s_name(plan.model_name, plan.candidate_version, plan.target)
    periods = a.consecutive_breaches

    def candidate_dimensions() -> list[dict[str, str]]:
        """Every metric the alarms watch is the candidate variant's."""
        return [{"Name": "EndpointName", "Value": base}, {"Name": "VariantName", "Value": cand_variant}]

    def variant_sum(metric_id: str, metric_name: str) -> dict[str, Any]:
        """A metric-math input: the candidate variant's ``metric_name`` summed per period."""
        metric = {
            "Namespace": "AWS/SageMaker",
            "MetricName": metric_name,
            "Dimensions": candidate_dimensions(),
        }
        return {
            "Id": metric_id,
            "MetricStat": {"Metric": metric, "Period": production_interval_s, "Stat": "Sum"},
            "ReturnData": False,
        }

    def alarm(name: str, threshold: float, metric: dict[str, Any]) -> dict[str, Any]:
        """An alarm on the candidate variant: breached when ``metric`` is over ``threshold`` for
        ``periods`` consecutive periods (no data is no breach)."""
        return {
            "AlarmName": f"{base}-{cand_variant}-{name}",
            **metric,
            "EvaluationPeriods": periods,
            "DatapointsToAlarm": periods,
            "Threshold": threshold,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        }

    alarms = [
        alarm(
            "p95-latency",
            float((a.max_p95_latency_ms or 1000.0) * 1000.0),  # ModelLatency is in microseconds
            {
                "Namespace": "AWS/SageMaker",
                "MetricName": "ModelLatency",
                "Dimensions": candidate_dimensions(),
                "ExtendedStatistic": "p95",
                "Period": production_interval_s,
            },
        ),
        alarm(
            "error-rate",
            a.max_error_rate,
            {
                "Metrics": [
                    variant_sum("errors", "Invocation5XXErrors"),
                    variant_sum("invocations", "Invocations"),
                    {
                        "Id": "rate",
                        "Expression": "IF(invocations > 0, errors / invocations, 0)",
                        "ReturnData": True,
                    },
                ]
            },
        ),
        alarm(
            "disagreement",
            a.max_disagreement,
            {
                "Namespace": "ADAS/Rollout",
                "MetricName": "CandidateDisagreement",
                "Dimensions": candidate_dimensions(),
                "Statistic": "Average",
                "Period": production_interval_s,
            },
        ),
    ]
    alarm_names = [al["AlarmName"] for al in alarms]
    variant = {
        "VariantName": cand_variant,
        "ModelName": cand_model,
        "InstanceType": instance,
        "InitialInstanceCount": instance_count,
    }
    first = plan.steps[0]
    endpoint_config: dict[str, Any] = {
        "EndpointConfigName": k8s_name(base, plan.candidate_version, "rollout"),
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100 if first.mode == "shadow" else 25,
            "DestinationS3Uri": capture_s3_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
    }
    prod = {
        "VariantName": prod_variant,
        "ModelName": k8s_name(plan.model_name, plan.production_version or "none", plan.target),
        "InstanceType": instance,
        "InitialInstanceCount": instance_count,
    }
    if first.mode == "shadow":
        endpoint_config["ProductionVariants"] = [{**prod, "InitialVariantWeight": 1.0}]
        endpoint_config["ShadowProductionVariants"] = [{**variant, "InitialVariantWeight": 1.0}]
    else:
        endpoint_config["ProductionVariants"] = [
            {**prod, "InitialVariantWeight": round(1.0 - first.weight / 100.0, 4)},
            {**variant, "InitialVariantWeight": round(first.weight / 100.0, 4)},
        ]
    traffic_steps = [
        {
            "step": s.name,
            "UpdateEndpointWeightsAndCapacities": {
                "EndpointName": base,
                "DesiredWeightsAndCapacities": [
                    {"VariantName": prod_variant, "DesiredWeight": round(1.0 - s.weight / 100.0, 4)},
                    {"VariantName": cand_variant, "DesiredWeight": round(s.weight / 100.0, 4)},
                ],
            },
            "bake_seconds": max(int(s.bake_s), production_interval_s * a.consecutive_breaches),
            "alarms_must_stay_ok": alarm_names,
        }
        for s in plan.steps
        if s.mode != "shadow"
    ]
    return {
        "applicable": True,
        "CreateModel": {
            "ModelName": cand_model,
            "ExecutionRoleArn": execution_role_arn,
            "PrimaryContainer": {
                "Image": image,
                "ModelDataUrl": model_data_url,
                "Environment": {"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME": plan.model_name},
            },
        },
        "CreateEndpointConfig": endpoint_config,
        "TrafficSteps": traffic_steps,
        "FinalUpdateEndpoint": {
            "EndpointName": base,
            "EndpointConfigName": k8s_name(base, plan.candidate_version),
            "DeploymentConfig": {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "CANARY",
                        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
                        "WaitIntervalInSeconds": production_interval_s * a.consecutive_breaches,
                    },
                    "TerminationWaitInSeconds": 600,
                    "MaximumExecutionTimeoutInSeconds": int(max(a.progress_deadline_s, 600)),
                },
                "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": n} for n in alarm_names]},
            },
        },
        "CloudWatchAlarms": alarms,
    }
