"""The local canary, for real: two Triton servers (2.51, python backend) behind Debian's nginx,
replayed recorded requests, nginx reconfigured and reloaded per step.

A candidate that is slower (a real sleep in its engine step) or disagrees beyond the
thresholds is rolled back automatically, with the test statistic in the reason; an identical
candidate on a host loaded by CPU burners is not; no request is dropped during any switch
(every request is counted). The agreeing candidate's full 1% -> 5% -> 25% -> 100% canary runs
in test_promotion (real promotion)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from adas.packaging.triton_repository import write_triton_repository
from adas.packaging.triton_server import default_triton_venv
from adas.registry.config import load_policy
from adas.registry.nginx import nginx_available
from adas.registry.rollout.controller import LocalRollout
from adas.registry.rollout.plan import PlanStep, PromotionPlan, make_plan
from adas.registry.rollout.report import RolloutReport
from tests.registry.packs import CPU, contract, frames

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not default_triton_venv().exists(), reason="no .venv-triton: run scripts/setup_triton_env.sh"
    ),
    pytest.mark.skipif(not nginx_available(), reason="no nginx: run scripts/setup_system_deps.sh"),
]
POLICY = load_policy()
TAGS = [
    {"scenario": s, "weather": w, "lighting": "day"}
    for s in ("highway", "merge")
    for w in ("clear", "fog", "rain", "snow")
]


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory, onnx_models: dict[str, Path]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("repos")
    out = {
        "production": write_triton_repository(
            root / "production", contract("1.2.0"), onnx_models["agree"], **CPU
        ).root,
        "good": write_triton_repository(root / "good", contract("1.3.0"), onnx_models["agree"], **CPU).root,
        "disagree": write_triton_repository(
            root / "disagree", contract("1.3.0"), onnx_models["disagree"], **CPU
        ).root,
    }
    # A team switching architecture ships another model name: served side by side with production.
    out["renamed"] = write_triton_repository(
        root / "renamed", contract("1.3.0", model_name="test-detector-v2"), onnx_models["agree"], **CPU
    ).root
    out["slow"] = _with_delayed_engine(out["good"], root / "slow", delay_ms=SLOW_ENGINE_DELAY_MS)
    return out


# Production's median is ~20-60 ms on 2 shared cores: 60 ms more per engine batch made the
# candidate's median 4-7x production's at 25%, far past the policy's minimum effect (1.5).
SLOW_ENGINE_DELAY_MS = 60
DELAYED_ENGINE = Path(__file__).with_name("delayed_engine.py")


def _with_delayed_engine(repository: Path, out: Path, delay_ms: float) -> Path:
    """A copy of ``repository`` whose engine step sleeps ``delay_ms`` per batch for real
    (:mod:`tests.registry.delayed_engine` wraps the repository's own ONNX Runtime engine)."""
    shutil.copytree(repository, out)
    version_dir = next(out.glob("*_engine/1"))
    (version_dir / "model.py").rename(version_dir / "onnxruntime_engine.py")
    shutil.copyfile(DELAYED_ENGINE, version_dir / "model.py")
    config = version_dir.parent / "config.pbtxt"
    config.write_text(
        config.read_text()
        + f'parameters {{ key: "injected_delay_ms" value: {{ string_value: "{delay_ms}" }} }}\n'
    )
    return out


@pytest.fixture
def busy_host() -> Iterator[int]:
    """Busy loops on every core for as long as the test runs (then ended by their ids)."""
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
    ]
    try:
        yield len(burners)
    finally:
        for p in burners:
            p.kill()
        for p in burners:
            p.wait(timeout=10)


def _plan(steps: list[tuple[float, float]], strategy: str = "canary") -> PromotionPlan:
    plan = make_plan(
        POLICY.rollout,
        target="x86-cpu/fp32",
        model_name="test-detector",
        candidate_version="1.3.0",
        production_version="1.2.0",
        strategy=strategy,  # type: ignore[arg-type]
    )
    if strategy == "canary":
        plan = plan.model_copy(
            update={"steps": [PlanStep(name=f"canary {w:g}%", weight=w, bake_s=b) for w, b in steps]}
        )
    else:
        plan = plan.model_copy(
            update={
                "steps": [
                    s.model_copy(update={"bake_s": b}) for s, (_, b) in zip(plan.steps, steps, strict=True)
                ]
            }
        )
    return plan.model_copy(update={"analysis": plan.analysis.model_copy(update={"baseline_s": 1.5})})


def _run(
    plan: PromotionPlan, production: Path, candidate: Path, workdir: Path
) -> tuple[RolloutReport, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    report = LocalRollout(
        plan,
        production_repository=production,
        candidate_repository=candidate,
        frames=frames(16),
        frame_meta=TAGS * 2,
        class_names={1: "car", 2: "truck", 3: "motorcycle"},
        concurrency=4,
        load_fraction=POLICY.rollout.local.load_fraction,  # paced, as the shipped policy runs it
        workdir=workdir,
        progress=lambda kind, data: events.append((kind, data)),
    ).run()
    print("\n" + report.to_markdown())
    return report, events


def _assert_nothing_dropped(report) -> None:  # type: ignore[no-untyped-def]
    assert report.requests["sent"] > 200
    assert report.dropped_requests == 0, report.requests
    assert report.dropped_production_requests == 0
    assert report.requests["ok"] == report.requests["sent"]


def test_slower_candidate_is_rolled_back_with_the_test_statistic(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    report, events = _run(_plan([(25, 20), (100, 5)]), repos["production"], repos["slow"], tmp_path)
    assert report.outcome == "rolled_back", report.to_markdown()
    # Paced at the policy's share of what production answered alone, as a fleet's traffic: the
    # slower candidate is caught by its own latency, not by a queue it built up.
    assert report.capacity_rps and report.offered_rps
    assert report.offered_rps == pytest.approx(
        POLICY.rollout.local.load_fraction * report.capacity_rps, rel=0.01
    )
    assert "paced" in report.to_markdown()
    assert "3 failed windows in a row: latency: Mann-Whitney U p = " in report.reason, report.reason
    assert "P(canary > baseline) = " in report.reason and "median ratio " in report.reason
    assert report.steps[0].result == "failed" and len(report.steps) == 1
    # The failed windows are recorded with their statistic: significant AND a large effect.
    a = POLICY.rollout.analysis
    failed = [i for i in report.intervals if i.result == "fail"]
    assert len(failed) >= a.consecutive_breaches
    for i in failed:
        assert i.latency_p_value is not None and i.latency_p_value < a.latency_alpha
        assert i.latency_effect is not None and i.latency_effect >= a.min_latency_effect
        assert i.latency_median_ratio is not None and i.latency_median_ratio >= a.min_latency_median_ratio
    _assert_nothing_dropped(report)
    b = report.breach
    assert b is not None
    # N=3 consecutive 1 s intervals, then the production-only config and the drain.
    assert b.first_breach_s < b.decision_s <= b.rollback_config_live_s <= b.rollback_drained_s
    assert b.decision_to_rollback_s < 5.0 and b.breach_to_rollback_s < 10.0
    # Nothing reached the candidate after the old workers drained.
    assert b.last_candidate_response_s is None or b.last_candidate_response_s <= b.rollback_drained_s + 0.05
    assert ("rolled_back", events[-1][1]) == events[-1]


def test_identical_candidate_on_a_busy_host_is_not_rolled_back(
    repos: dict[str, Path], tmp_path: Path, busy_host: int
) -> None:
    """Busy loops on every core for the whole rollout: production's latencies and the
    candidate's rise and scatter alike, so the comparison over the same windows finds no large
    effect. The candidate is promoted, possibly after being held for more evidence."""
    report, _ = _run(_plan([(25, 8), (100, 8)]), repos["production"], repos["good"], tmp_path)
    assert report.outcome == "promoted", report.to_markdown()
    _assert_nothing_dropped(report)
    # Both steps were judged by the rank test, the 100% step against probes of production.
    tested = {i.step for i in report.intervals if i.latency_p_value is not None}
    assert tested == {"canary 25%", "canary 100%"}
    assert report.requests["baseline_probes"] > 0


def test_disagreeing_candidate_is_rolled_back_with_error_clusters(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    report, _ = _run(_plan([(25, 20), (100, 5)]), repos["production"], repos["disagree"], tmp_path)
    assert report.outcome == "rolled_back", report.to_markdown()
    assert "disagreement" in report.reason
    _assert_nothing_dropped(report)
    clusters = report.diff_clusters
    assert clusters and clusters[0]["mean_disagreement"] > 0.25
    assert clusters[0]["cluster"].startswith("scenario=") and (clusters[0]["missed"] or clusters[0]["extra"])


def test_shadow_mirrors_traffic_and_catches_disagreement(repos: dict[str, Path], tmp_path: Path) -> None:
    report, _ = _run(
        _plan([(0, 20), (100, 3)], strategy="shadow"), repos["production"], repos["disagree"], tmp_path
    )
    assert report.outcome == "rolled_back", report.to_markdown()
    assert "disagreement" in report.reason
    assert report.requests["by_arm"].get("candidate", 0) == 0  # shadow: the candidate never answers a client
    assert report.mirrored["mirrored"] > 0 and report.mirrored["mirrored_ok"] == report.mirrored["mirrored"]
    _assert_nothing_dropped(report)
    assert np.isfinite(report.throughput_rps)


def test_ab_split_promotes_an_agreeing_candidate_with_both_arms_served(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    report, _ = _run(_plan([(50, 12), (100, 3)], strategy="ab"), repos["production"], repos["good"], tmp_path)
    assert report.outcome == "promoted", report.to_markdown()
    # Cohorts are split by header: both arms answered clients during the A/B step.
    assert (
        report.requests["by_arm"].get("candidate", 0) > 0
        and report.requests["by_arm"].get("production", 0) > 0
    )
    _assert_nothing_dropped(report)


def test_ab_split_rolls_back_a_disagreeing_candidate(repos: dict[str, Path], tmp_path: Path) -> None:
    report, _ = _run(
        _plan([(50, 12), (100, 3)], strategy="ab"), repos["production"], repos["disagree"], tmp_path
    )
    assert report.outcome == "rolled_back", report.to_markdown()
    assert "disagreement" in report.reason
    _assert_nothing_dropped(report)


def test_a_candidate_served_under_another_name_is_canaried_against_production(
    repos: dict[str, Path], tmp_path: Path
) -> None:
    # Clients and the plan address production's name; each arm answers with its own ensemble, and
    # the warm-up and shadow requests sent straight to the candidate use the candidate's name.
    report, events = _run(_plan([(50, 8), (100, 3)]), repos["production"], repos["renamed"], tmp_path)
    assert report.outcome == "promoted", report.to_markdown()
    warmed = dict(events)["candidate_warmed_up"]
    assert warmed["requests"] > 0 and warmed["failures"] == 0, warmed
    assert report.requests["by_arm"].get("candidate", 0) > 0
    _assert_nothing_dropped(report)
