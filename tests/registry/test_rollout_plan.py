"""Plans, the step analysis and its guard, and the production renderings (no servers)."""

from __future__ import annotations

import json

import pytest
import yaml

from adas.config_errors import ConfigError
from adas.registry.config import POLICY_FILE, AnalysisPolicy, load_policy
from adas.registry.nginx import Split, render_config
from adas.registry.rollout.analysis import Guard, analyze_window
from adas.registry.rollout.argo import render_argo_rollout
from adas.registry.rollout.plan import make_plan
from adas.registry.rollout.sagemaker import render_sagemaker_deployment
from adas.registry.traffic import Answer, Sample, compare

POLICY = load_policy()


def _plan(strategy: str = "canary", target: str = "x86-cpu/fp32"):  # type: ignore[no-untyped-def]
    return make_plan(
        POLICY.rollout,
        target=target,
        model_name="adas-detector",
        candidate_version="1.3.0",
        production_version="1.2.0",
        strategy=strategy,  # type: ignore[arg-type]
    )


def _samples(
    arm: str, latencies_ms: list[float], ok: bool = True, disagreement: float | None = None
) -> list[Sample]:
    return [
        Sample(0.0, ms / 1000.0, arm, 1, ok, 200 if ok else 503, i, disagreement)
        for i, ms in enumerate(latencies_ms)
    ]


def test_plans_for_each_strategy() -> None:
    canary = _plan()
    assert [s.weight for s in canary.steps] == [1, 5, 25, 100]
    assert all(s.bake_s > 0 for s in canary.steps)
    shadow = _plan("shadow")
    assert [s.mode for s in shadow.steps] == ["shadow", "canary"] and shadow.steps[-1].weight == 100
    ab = _plan("ab")
    assert ab.steps[0].mode == "ab" and ab.steps[0].weight == 50
    md = canary.to_markdown()
    assert "| 1 | canary 1% | canary | 1% |" in md and "Rollback after 3 consecutive breaches" in md


def test_policy_errors_name_the_file_and_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "policy.yaml"
    text = POLICY_FILE.read_text()
    bad.write_text(text.replace("{weight: 100, bake_s: 6}", "{weight: 90, bake_s: 6}"))
    with pytest.raises(
        ConfigError, match=r"policy.yaml is invalid:\n  - rollout.canary: the last canary step"
    ):
        load_policy(bad)
    bad.write_text(text.replace("[technical, safety, security, product]", "[technical, legal]"))
    with pytest.raises(ConfigError, match=r"governance.required_approvals: unknown roles \['legal'\]"):
        load_policy(bad)


def test_analysis_pass_fail_inconclusive() -> None:
    policy = AnalysisPolicy(
        min_samples=5, max_p95_latency_ratio=1.5, p95_latency_slack_ms=5, max_disagreement=0.2
    )
    prod = _samples("production", [10.0] * 20)
    result, metrics, breaches = analyze_window(
        _samples("candidate", [11.0] * 10, disagreement=0.0), prod, policy
    )
    assert result == "pass" and not breaches and metrics["candidate_p95_ms"] == pytest.approx(11.0)
    result, _, breaches = analyze_window(_samples("candidate", [40.0] * 10), prod, policy)
    assert result == "fail" and breaches == ["p95 40.0 ms > 20.0 ms (production 10.0 ms)"]
    result, _, breaches = analyze_window(_samples("candidate", [10.0] * 10, disagreement=0.6), prod, policy)
    assert result == "fail" and breaches == ["disagreement 0.60 > 0.20"]
    errors = _samples("candidate", [10.0] * 8) + _samples("candidate", [10.0] * 2, ok=False)
    result, _, breaches = analyze_window(errors, prod, policy)
    assert result == "fail" and breaches[0].startswith("error rate 20.0% > 1.0%")
    result, _, breaches = analyze_window(_samples("candidate", [99.0] * 3), prod, policy)
    assert result == "inconclusive" and "3 candidate samples < 5" in breaches[0]


def test_guard_rolls_back_after_n_consecutive_breaches_and_pauses_when_inconclusive() -> None:
    g = Guard(AnalysisPolicy(consecutive_breaches=3, failure_limit=10, inconclusive_limit=4))
    assert g.observe("fail", 1.0, False, ["slow"]) == "continue"
    assert g.observe("pass", 2.0, False, []) == "continue"  # a pass resets the streak
    assert g.observe("fail", 3.0, False, ["slow"]) == "continue"
    assert g.observe("fail", 4.0, False, ["slow"]) == "continue"
    assert g.observe("fail", 5.0, True, ["slow"]) == "rollback"
    assert g.first_breach_at == 3.0 and "3 consecutive breaches: slow" in (g.reason or "")
    g = Guard(AnalysisPolicy(consecutive_breaches=5, failure_limit=2))
    g.observe("fail", 1.0, False, ["x"])
    g.observe("pass", 2.0, False, [])
    assert g.observe("fail", 3.0, False, ["x"]) == "rollback" and "failure limit" in (g.reason or "")
    g = Guard(AnalysisPolicy(inconclusive_limit=3))
    assert g.observe("inconclusive", 1.0, False, ["few"]) == "continue"
    assert g.observe("inconclusive", 2.0, True, ["few"]) == "pause"
    assert g.observe("pass", 3.0, True, []) == "advance"
    for t in (4.0, 5.0):
        g.observe("inconclusive", t, True, ["few"])
    assert g.observe("inconclusive", 6.0, True, ["few"]) == "rollback"


def test_disagreement_modes_and_confidence() -> None:
    import numpy as np

    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    a = Answer(boxes, np.array([1, 2]), np.array([0.9, 0.8], np.float32))
    assert compare(a, a)[0] == 0.0 and compare(a, a, mode="misses")[0] == 0.0
    shifted = Answer(np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32), np.array([1, 2]), a.scores)
    d, missed, extra = compare(shifted, a)
    assert d == pytest.approx(0.5) and missed == {2: 1} and extra == {2: 1}
    assert compare(Answer(boxes, np.array([1, 3]), a.scores), a)[0] == pytest.approx(0.5)  # wrong class
    # A better candidate that also finds a third object: no miss, one extra.
    better = Answer(
        np.vstack([boxes, [[40, 40, 50, 50]]]), np.array([1, 2, 1]), np.array([0.9, 0.8, 0.7], np.float32)
    )
    assert compare(better, a, mode="misses")[0] == 0.0
    assert compare(better, a, mode="symmetric")[0] == pytest.approx(0.2)
    # Production's low-confidence detection is not held against the candidate.
    weak = Answer(boxes, np.array([1, 2]), np.array([0.9, 0.3], np.float32))
    only_first = Answer(boxes[:1], np.array([1]), np.array([0.9], np.float32))
    assert compare(only_first, weak, mode="misses", min_score=0.5)[0] == 0.0
    assert compare(only_first, weak, mode="misses", min_score=0.0)[0] == pytest.approx(0.5)
    empty = Answer(np.zeros((0, 4), np.float32), np.zeros(0, np.int32))
    assert compare(empty, empty)[0] == 0.0 and compare(empty, a)[0] == 1.0
    assert compare(a, empty, mode="misses")[0] == 0.0 and compare(a, empty, mode="symmetric")[0] == 1.0


def test_nginx_config_per_mode() -> None:
    from pathlib import Path

    kw = {
        "prefix": Path("/x"),
        "listen_port": 1,
        "production_port": 2,
        "candidate_port": 3,
        "run_as_root": False,
    }
    canary = render_config(split=Split(5), generation=2, **kw)
    assert 'split_clients "${request_id}" $arm { 5% candidate; * production; }' in canary
    assert "add_header X-Rollout-Generation 2 always;" in canary and "mirror /_shadow" not in canary
    ab = render_config(split=Split(50, mode="ab", cohort_header="X-Vehicle-Id"), generation=1, **kw)
    assert 'split_clients "$http_x_vehicle_id" $arm { 50% candidate; * production; }' in ab
    shadow = render_config(split=Split(0, mode="shadow", mirror_percent=25), generation=3, **kw)
    assert "mirror /_shadow;" in shadow and "map $request_id $arm { default production; }" in shadow
    assert "25% 1; * 0;" in shadow
    assert "map $request_id $arm { default candidate; }" in render_config(
        split=Split(100), generation=4, **kw
    )


def test_argo_rollout_and_analysis_template() -> None:
    docs = list(
        yaml.safe_load_all(
            render_argo_rollout(
                _plan(target="t4/fp16"),
                image="123.dkr.ecr.us-east-1.amazonaws.com/adas-detector:1.3.0-abc",
                model_repository_uri="s3://b/gold/models/x/1.3.0/t4/fp16/triton",
                node_selector={"nvidia.com/gpu.product": "Tesla-T4"},
                gpu_count=1,
            )
        )
    )
    rollout, template = docs
    assert rollout["kind"] == "Rollout" and template["kind"] == "AnalysisTemplate"
    spec = rollout["spec"]
    canary = spec["strategy"]["canary"]
    assert [s["setWeight"] for s in canary["steps"] if "setWeight" in s] == [1, 5, 25, 100]
    assert canary["steps"][1] == {"pause": {"duration": "8s"}}
    assert canary["analysis"]["templates"][0]["templateName"] == template["metadata"]["name"]
    assert spec["progressDeadlineAbort"] is True and spec["progressDeadlineSeconds"] == 240
    container = spec["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert spec["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "Tesla-T4"}
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert set(metrics) == {"p95-latency-ratio", "error-rate", "disagreement"}
    assert "min_over_time" in metrics["p95-latency-ratio"]["provider"]["prometheus"]["query"]
    assert "[180s:]" in metrics["p95-latency-ratio"]["provider"]["prometheus"]["query"]  # 3 x 60 s
    assert metrics["disagreement"]["successCondition"].endswith("<= 0.25")
    shadow = next(
        yaml.safe_load_all(render_argo_rollout(_plan("shadow"), image="i", model_repository_uri="s3://x"))
    )
    steps = shadow["spec"]["strategy"]["canary"]["steps"]
    assert steps[0]["setMirrorRoute"]["percentage"] == 25
    assert shadow["spec"]["strategy"]["canary"]["trafficRouting"]["managedRoutes"] == [{"name": "shadow"}]


def test_sagemaker_deployment_config() -> None:
    sm = render_sagemaker_deployment(
        _plan(target="t4/fp16"), image="img:1", model_data_url="s3://b/triton.tar.gz"
    )
    assert sm["applicable"] is True
    variants = sm["CreateEndpointConfig"]["ProductionVariants"]
    assert [v["InitialVariantWeight"] for v in variants] == [0.99, 0.01]
    assert variants[1]["InstanceType"] == "ml.g4dn.xlarge"
    assert [
        s["UpdateEndpointWeightsAndCapacities"]["DesiredWeightsAndCapacities"][1]["DesiredWeight"]
        for s in sm["TrafficSteps"]
    ] == [0.01, 0.05, 0.25, 1.0]
    policy = sm["FinalUpdateEndpoint"]["DeploymentConfig"]
    alarms = [a["AlarmName"] for a in sm["CloudWatchAlarms"]]
    assert [a["AlarmName"] for a in policy["AutoRollbackConfiguration"]["Alarms"]] == alarms
    assert policy["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "CANARY"
    latency = sm["CloudWatchAlarms"][0]
    assert (
        latency["ExtendedStatistic"] == "p95"
        and latency["EvaluationPeriods"] == 3 == latency["DatapointsToAlarm"]
    )
    error_rate = sm["CloudWatchAlarms"][1]
    metrics = {m["Id"]: m for m in error_rate["Metrics"]}
    assert metrics["rate"]["Expression"] == "IF(invocations > 0, errors / invocations, 0)"
    for metric_id, name in (("errors", "Invocation5XXErrors"), ("invocations", "Invocations")):
        stat = metrics[metric_id]["MetricStat"]
        assert stat["Metric"]["MetricName"] == name and stat["Stat"] == "Sum"
        assert {"Name": "VariantName", "Value": variants[1]["VariantName"]} in stat["Metric"]["Dimensions"]
    json.dumps(sm)  # plain JSON, ready for boto3
    shadow = render_sagemaker_deployment(_plan("shadow"), image="i", model_data_url="s3://x")
    assert shadow["CreateEndpointConfig"]["ShadowProductionVariants"][0]["VariantName"] == "candidate-1-3-0"
    assert (
        render_sagemaker_deployment(_plan(target="orin/int8"), image="i", model_data_url="s3://x")[
            "applicable"
        ]
        is False
    )
