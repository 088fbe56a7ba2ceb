"""Plans, the step analysis and its guard, and the production renderings (no servers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from adas.config_errors import ConfigError
from adas.registry.config import POLICY_FILE, load_policy
from adas.registry.nginx import Split, render_config
from adas.registry.rollout.analysis import Guard, analyze_window
from adas.registry.rollout.argo import render_argo_rollout
from adas.registry.rollout.controller import _spread, _window_of
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
    arm: str,
    latencies_ms: list[float],
    ok: bool = True,
    disagreement: float | None = None,
    every_s: float = 0.25,
) -> list[Sample]:
    """One request every ``every_s`` seconds (windows must span min_window_span_s to be judged)."""
    return [
        Sample(i * every_s, i * every_s + ms / 1000.0, arm, 1, ok, 200 if ok else 503, i, disagreement)
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
    assert "| 1 | canary 1% | canary | 1% |" in md and "Rollback after 3 failed windows in a row" in md
    assert "one-sided Mann-Whitney U test is significant (p < 0.01)" in md
    assert "held for more evidence (at most 60 s past its bake time)" in md


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


def _latencies(rng: np.random.Generator, median_ms: float, n: int, sigma: float) -> list[float]:
    return list(rng.lognormal(np.log(median_ms), sigma, n))


# Small windows so that the tests read like the rule; the decisions use the repository's
# statistical thresholds (alpha, minimum effect) from config/registry.yaml.
ANALYSIS = POLICY.rollout.analysis.model_copy(
    update={"min_samples": 10, "max_disagreement": 0.2, "consecutive_breaches": 3, "max_extension_s": 20}
)


def test_identical_latencies_with_heavy_noise_never_fail() -> None:
    """Same distribution, heavy-tailed (lognormal sigma 1: the p95 is ~5x the median): across
    300 windows no latency comparison fails, so the guard never rolls back."""
    rng = np.random.default_rng(7)
    guard = Guard(ANALYSIS)
    results = []
    for t in range(300):
        cand = _samples("candidate", _latencies(rng, 30.0, 40, 1.0), disagreement=0.0)
        base = _samples("production", _latencies(rng, 30.0, 160, 1.0))
        verdict = analyze_window(cand, base, ANALYSIS)
        results.append(verdict.result)
        assert verdict.latency is not None and verdict.metrics["latency_p_value"] is not None
        assert guard.observe(verdict, float(t), float(t), bake_s=1000.0) == "continue"
    assert set(results) == {"pass"}


def test_a_tail_of_stalls_on_a_busy_host_passes_where_a_p95_budget_failed() -> None:
    """The demo's false rollback: 3 of 40 canary requests stalled ~200 ms by a busy host, the
    rest like production (34 ms p95). p95 x 2 + 25 ms (93 ms) failed it; the ranks do not."""
    rng = np.random.default_rng(3)
    base = _samples("production", _latencies(rng, 20.0, 160, 0.3))
    cand = _samples("candidate", [*_latencies(rng, 20.0, 37, 0.3), 190.0, 195.0, 210.0])
    verdict = analyze_window(cand, base, ANALYSIS)
    assert (verdict.metrics["candidate_p95_ms"] or 0) > 93.2 > (verdict.metrics["baseline_p95_ms"] or 0)
    assert verdict.result == "pass", verdict.reasons


def test_a_twice_slower_canary_fails_with_the_statistic_in_the_reason() -> None:
    rng = np.random.default_rng(1)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.5))
    cand = _samples("candidate", _latencies(rng, 60.0, 40, 0.5), disagreement=0.0)
    verdict = analyze_window(cand, base, ANALYSIS)
    assert verdict.result == "fail" and not verdict.immediate
    assert verdict.latency is not None and verdict.latency.p_value < ANALYSIS.latency_alpha
    (reason,) = verdict.reasons
    assert reason.startswith("latency: Mann-Whitney U p = ")
    assert "P(canary > baseline) = 0.8" in reason or "P(canary > baseline) = 0.9" in reason
    assert "median ratio 2." in reason and "(n = 40 vs 160)" in reason
    guard = Guard(ANALYSIS)
    actions = [guard.observe(verdict, float(t), float(t), bake_s=5.0) for t in range(3)]
    assert actions == ["continue", "continue", "rollback"]
    assert guard.first_breach_at == 0.0
    assert (guard.reason or "").startswith("3 failed windows in a row: latency: Mann-Whitney U p = ")


def test_latency_is_not_judged_on_a_window_spanning_one_burst() -> None:
    """40 requests within one second (the start of a busy step): even a 2x slower canary is only
    held, with the statistic in the reason, until its window spans min_window_span_s (5 s)."""
    rng = np.random.default_rng(1)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.5), every_s=0.025)
    cand = _samples("candidate", _latencies(rng, 60.0, 40, 0.5), every_s=0.025)
    verdict = analyze_window(cand, base, ANALYSIS)
    assert verdict.result == "inconclusive" and verdict.metrics["latency_p_value"] is not None
    (reason,) = verdict.reasons
    assert reason.startswith("latency: the window spans 1.0 s < 5 s (Mann-Whitney U p = ")
    g = Guard(ANALYSIS)
    assert g.observe(verdict, 9.0, 9.0, bake_s=8.0) == "hold" and "spans 1.0 s" in (g.hold_reason or "")


def test_significant_but_small_slowdown_passes() -> None:
    """10% slower with 400 samples a side is significant, but below the minimum effect."""
    rng = np.random.default_rng(2)
    policy = ANALYSIS.model_copy(update={"window_samples": 400})
    base = _samples("production", _latencies(rng, 30.0, 400, 0.2))
    cand = _samples("candidate", _latencies(rng, 33.0, 400, 0.2))
    verdict = analyze_window(cand, base, policy)
    assert verdict.latency is not None and verdict.latency.p_value < policy.latency_alpha
    assert verdict.result == "pass"


def test_an_error_burst_rolls_back_at_once() -> None:
    rng = np.random.default_rng(4)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.3))
    cand = _samples("candidate", _latencies(rng, 30.0, 36, 0.3)) + _samples("candidate", [5.0] * 4, ok=False)
    verdict = analyze_window(cand, base, ANALYSIS)
    assert verdict.result == "fail" and verdict.immediate
    assert verdict.reasons == ["errors: 4 of 40 canary requests failed (10.0% > 1.0%)"]
    guard = Guard(ANALYSIS)
    assert guard.observe(verdict, 12.0, 0.5, bake_s=5.0) == "rollback"  # the first window
    assert guard.first_breach_at == 12.0 and (guard.reason or "").startswith("rolled back at once: errors:")


def test_an_absolute_slo_breach_by_the_canary_alone_rolls_back_at_once() -> None:
    """Both arms equally slow (no relative regression), but the canary's own p95 is over the SLO."""
    rng = np.random.default_rng(5)
    policy = ANALYSIS.model_copy(update={"max_p95_latency_ms": 50.0})
    base = _samples("production", _latencies(rng, 60.0, 160, 0.2))
    cand = _samples("candidate", _latencies(rng, 60.0, 40, 0.2))
    verdict = analyze_window(cand, base, policy)
    assert verdict.result == "fail" and verdict.immediate
    (reason,) = verdict.reasons
    assert reason.startswith("latency SLO: canary p95 ") and reason.endswith(" ms > 50 ms (n = 40)")
    guard = Guard(policy)
    assert guard.observe(verdict, 1.0, 1.0, bake_s=5.0) == "rollback"


def test_too_few_samples_extend_the_step_instead_of_rolling_back() -> None:
    rng = np.random.default_rng(6)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.3))
    few = analyze_window(_samples("candidate", _latencies(rng, 30.0, 4, 0.3)), base, ANALYSIS)
    assert few.result == "inconclusive" and few.reasons == ["too few samples: 4 canary requests < 10"]
    no_baseline = analyze_window(_samples("candidate", _latencies(rng, 30.0, 20, 0.3)), base[:3], ANALYSIS)
    assert no_baseline.result == "inconclusive"
    assert no_baseline.reasons == [
        "latency: too few samples to compare (20 canary vs 3 baseline, 10 needed in each)"
    ]
    guard = Guard(ANALYSIS)
    assert guard.observe(few, 1.0, 1.0, bake_s=5.0) == "continue"  # still baking
    # Past the bake time without a verdict: held for more evidence, up to max_extension_s (20 s).
    for elapsed in (5.0, 10.0, 25.0):
        assert guard.observe(few, elapsed, elapsed, bake_s=5.0) == "hold"
        assert (guard.hold_reason or "").startswith("held for more evidence")
        assert "too few samples: 4 canary requests < 10" in (guard.hold_reason or "")
    enough = analyze_window(_samples("candidate", _latencies(rng, 30.0, 40, 0.3)), base, ANALYSIS)
    assert enough.result == "pass"
    assert guard.observe(enough, 26.0, 26.0, bake_s=5.0) == "advance"
    # Never a verdict: rolled back once the extension is spent, saying why.
    guard = Guard(ANALYSIS)
    assert guard.observe(few, 25.0, 25.0, bake_s=5.0) == "hold"
    assert guard.observe(few, 25.5, 25.5, bake_s=5.0) == "rollback"
    assert (guard.reason or "").startswith("no passing window 20 s past the bake time (max extension 20 s)")


def test_an_inconclusive_window_neither_resets_nor_extends_a_failure_streak() -> None:
    rng = np.random.default_rng(8)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.5))
    slow = analyze_window(_samples("candidate", _latencies(rng, 60.0, 40, 0.5)), base, ANALYSIS)
    few = analyze_window(_samples("candidate", [60.0] * 3), base, ANALYSIS)
    same = analyze_window(_samples("candidate", _latencies(rng, 30.0, 40, 0.5)), base, ANALYSIS)
    assert (slow.result, few.result, same.result) == ("fail", "inconclusive", "pass")
    g = Guard(ANALYSIS)
    assert [g.observe(v, float(t), float(t), bake_s=100.0) for t, v in enumerate([slow, few, slow])] == [
        "continue"
    ] * 3
    assert g.observe(slow, 3.0, 3.0, bake_s=100.0) == "rollback" and g.first_breach_at == 0.0
    g = Guard(ANALYSIS)
    for t, v in enumerate([slow, slow, same, slow, slow]):
        assert g.observe(v, float(t), float(t), bake_s=100.0) == "continue"  # a pass resets the streak
    g = Guard(ANALYSIS.model_copy(update={"failure_limit": 2, "consecutive_breaches": 5}))
    g.observe(slow, 1.0, 1.0, bake_s=100.0)
    g.observe(same, 2.0, 2.0, bake_s=100.0)
    assert g.observe(slow, 3.0, 3.0, bake_s=100.0) == "rollback" and "failure limit" in (g.reason or "")


def test_a_window_spreads_over_window_s_when_samples_abound() -> None:
    """40 requests a second for 20 s: the window takes 40 of the last 10 s, evenly spread (a
    second's requests share one burst of host load); at 1 request a second, the newest 40."""
    policy = ANALYSIS.model_copy(update={"window_samples": 40, "window_s": 10.0})
    busy = [Sample(i / 40, i / 40 + 0.03, "candidate", 1, True, 200, i) for i in range(800)]
    window = _window_of(busy, policy, now=20.0)
    starts = [s.t_start for s in window]
    assert len(window) == 40 and starts[0] == pytest.approx(10.0) and starts[-1] == pytest.approx(19.975)
    assert max(np.diff(starts)) < 0.3
    slow = [Sample(float(i), i + 0.03, "candidate", 1, True, 200, i) for i in range(60)]
    assert [s.frame for s in _window_of(slow, policy, now=60.0)] == list(range(20, 60))
    assert [s.frame for s in _spread(slow, 4)] == [0, 20, 39, 59]


def test_disagreement_is_a_bound_on_the_mean() -> None:
    rng = np.random.default_rng(9)
    base = _samples("production", _latencies(rng, 30.0, 160, 0.3))
    cand = _samples("candidate", _latencies(rng, 30.0, 40, 0.3), disagreement=0.6)
    verdict = analyze_window(cand, base, ANALYSIS)
    assert verdict.result == "fail" and not verdict.immediate
    assert verdict.reasons == ["disagreement: mean 0.60 > 0.20 over 40 compared answers"]
    shadow = analyze_window(cand, base, ANALYSIS, disagreements=[0.0, 0.1])
    assert shadow.result == "pass" and shadow.metrics["disagreement"] == pytest.approx(0.05)


def test_policy_requires_a_window_that_can_hold_min_samples(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "policy.yaml"
    bad.write_text(POLICY_FILE.read_text().replace("min_samples: 10", "min_samples: 50"))
    with pytest.raises(
        ConfigError, match=r"rollout.analysis: min_samples \(50\) must not exceed window_samples \(40\)"
    ):
        load_policy(bad)
    bad.write_text(POLICY_FILE.read_text().replace("min_window_span_s: 5", "min_window_span_s: 12"))
    with pytest.raises(ConfigError, match=r"min_window_span_s \(12\) must not exceed window_s \(10\)"):
        load_policy(bad)
    bad.write_text(POLICY_FILE.read_text().replace("min_latency_effect: 0.7", "min_latency_effect: 0.4"))
    with pytest.raises(
        ConfigError, match=r"rollout.analysis.min_latency_effect: Input should be greater than 0.5"
    ):
        load_policy(bad)


def test_disagreement_modes_and_confidence() -> None:
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
    # The analysis's baseline probes reach production through the same nginx, whatever the split.
    assert "location /_baseline/ {" in canary and "proxy_pass http://production/;" in canary
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
