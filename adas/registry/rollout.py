"""Promotion plans and their execution.

A :class:`PromotionPlan` is the strategy (shadow, canary 1% -> 5% -> 25% -> 100% with bake
times, or A/B by cohort) plus the analysis that guards every step. The same plan is:

* executed for real on one machine by :class:`LocalRollout`: the production and candidate
  packs' Triton repositories on two real Triton servers behind Debian's nginx (weighted split
  regenerated and reloaded per step), driven by replayed recorded requests; and
* rendered for production as an Argo Rollouts ``Rollout`` + ``AnalysisTemplate``
  (:func:`render_argo_rollout`) and as an AWS SageMaker endpoint deployment
  (:func:`render_sagemaker_deployment`: variants, traffic steps, blue/green update with
  CloudWatch alarms for auto-rollback).

Analysis: every ``interval_s`` the newest candidate samples of the step are compared with
production's over the same period: p95 latency (ratio + slack, optional absolute limit),
error rate, and candidate-vs-production disagreement (the safety proxy). The interval is
``pass``, ``fail`` (a breach, named) or ``inconclusive`` (too few samples). ``fail`` for
``consecutive_breaches`` intervals in a row, or ``failure_limit`` failures in all, rolls back;
``inconclusive`` holds the step (pause) and ``inconclusive_limit`` in a row, or the progress
deadline, rolls back. A step advances once its bake time is over and its latest analysis
passed.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field

from adas.registry.config import AnalysisPolicy, RolloutPolicy, Strategy
from adas.registry.nginx import NginxSplitter, Split
from adas.registry.traffic import AccessLogTail, ReplayDriver, RequestCodec, Sample

Result = Literal["pass", "fail", "inconclusive"]
Action = Literal["continue", "advance", "rollback", "pause"]


# --------------------------------------------------------------------------- the plan


class PlanStep(BaseModel):
    name: str
    weight: float = Field(ge=0, le=100, description="percent of requests (or cohorts) on the candidate")
    bake_s: float = Field(gt=0)
    mode: Literal["canary", "ab", "shadow"] = "canary"
    mirror_percent: float = Field(default=100.0, gt=0, le=100)


class PromotionPlan(BaseModel):
    strategy: Strategy
    target: str
    model_name: str
    candidate_version: str
    production_version: str | None
    steps: list[PlanStep]
    analysis: AnalysisPolicy
    cohort_header: str = "X-Vehicle-Id"
    shadow_diff_sample_rate: float = 0.25

    def to_markdown(self) -> str:
        a = self.analysis
        rows = "\n".join(
            f"| {i + 1} | {s.name} | {s.mode} | {s.weight:g}% | {s.bake_s:g} s |"
            for i, s in enumerate(self.steps)
        )
        return (
            f"### Promotion plan: {self.model_name} {self.production_version or '(none)'} -> "
            f"{self.candidate_version} on {self.target} ({self.strategy})\n\n"
            "| # | step | mode | candidate share | bake |\n|---|---|---|---|---|\n"
            f"{rows}\n\n"
            f"Analysis every {a.interval_s:g} s over the newest {a.window_samples} candidate samples "
            f"(min {a.min_samples}): p95 <= production x {a.max_p95_latency_ratio:g} + {a.p95_latency_slack_ms:g} ms"
            + (f" and <= {a.max_p95_latency_ms:g} ms" if a.max_p95_latency_ms else "")
            + f", error rate <= {a.max_error_rate:.2%}, disagreement ({a.disagreement_mode} of detections "
            f"scored >= {a.disagreement_min_score:g}) <= {a.max_disagreement:.2f}. "
            f"Rollback after {a.consecutive_breaches} consecutive breaches or {a.failure_limit} in all; "
            f"pause while inconclusive (rollback after {a.inconclusive_limit} in a row); "
            f"progress deadline {a.progress_deadline_s:g} s."
        )


def make_plan(
    policy: RolloutPolicy,
    *,
    target: str,
    model_name: str,
    candidate_version: str,
    production_version: str | None,
    strategy: Strategy | None = None,
) -> PromotionPlan:
    strategy = strategy or policy.strategy
    if strategy == "canary":
        steps = [
            PlanStep(name=f"canary {s.weight:g}%", weight=s.weight, bake_s=s.bake_s, mode="canary")
            for s in policy.canary.steps
        ]
    elif strategy == "shadow":
        steps = [
            PlanStep(
                name=f"shadow (mirror {policy.shadow.mirror_percent:g}%)",
                weight=0,
                bake_s=policy.shadow.bake_s,
                mode="shadow",
                mirror_percent=policy.shadow.mirror_percent,
            ),
            PlanStep(name="cutover 100%", weight=100, bake_s=policy.canary.steps[-1].bake_s, mode="canary"),
        ]
    else:
        steps = [
            PlanStep(
                name=f"A/B {policy.ab.weight:g}% of cohorts",
                weight=policy.ab.weight,
                bake_s=policy.ab.bake_s,
                mode="ab",
            ),
            PlanStep(name="cutover 100%", weight=100, bake_s=policy.canary.steps[-1].bake_s, mode="canary"),
        ]
    return PromotionPlan(
        strategy=strategy,
        target=target,
        model_name=model_name,
        candidate_version=candidate_version,
        production_version=production_version,
        steps=steps,
        analysis=policy.analysis,
        cohort_header=policy.ab.cohort_header,
        shadow_diff_sample_rate=policy.shadow.diff_sample_rate,
    )


# --------------------------------------------------------------------------- analysis


class IntervalAnalysis(BaseModel):
    step: str
    index: int
    t_s: float
    candidate_samples: int
    production_samples: int
    candidate_p95_ms: float | None
    production_p95_ms: float | None
    error_rate: float | None
    disagreement: float | None
    result: Result
    breaches: list[str]
    action: Action = "continue"


def _p95(values: Sequence[float]) -> float | None:
    return float(np.percentile(np.asarray(values), 95)) if values else None


def analyze_window(
    candidate: Sequence[Sample],
    production: Sequence[Sample],
    policy: AnalysisPolicy,
    disagreements: Sequence[float] | None = None,
) -> tuple[Result, dict[str, float | None], list[str]]:
    """One interval's verdict over candidate samples and production samples of the same period
    (``disagreements`` when they come from elsewhere than the candidate samples: shadow diffs)."""
    ok_c = [s.latency_ms for s in candidate if s.ok]
    ok_p = [s.latency_ms for s in production if s.ok]
    errors = sum(1 for s in candidate if not s.ok)
    diffs = (
        list(disagreements)
        if disagreements is not None
        else [s.disagreement for s in candidate if s.disagreement is not None]
    )
    metrics: dict[str, float | None] = {
        "candidate_p95_ms": _p95(ok_c),
        "production_p95_ms": _p95(ok_p),
        "error_rate": errors / len(candidate) if candidate else None,
        "disagreement": float(np.mean(diffs)) if diffs else None,
    }
    if len(candidate) < policy.min_samples:
        return "inconclusive", metrics, [f"{len(candidate)} candidate samples < {policy.min_samples}"]
    breaches = []
    er = metrics["error_rate"] or 0.0
    if er > policy.max_error_rate:
        breaches.append(f"error rate {er:.1%} > {policy.max_error_rate:.1%}")
    cp, pp = metrics["candidate_p95_ms"], metrics["production_p95_ms"]
    if cp is not None and pp is not None:
        limit = pp * policy.max_p95_latency_ratio + policy.p95_latency_slack_ms
        if cp > limit:
            breaches.append(f"p95 {cp:.1f} ms > {limit:.1f} ms (production {pp:.1f} ms)")
    if cp is not None and policy.max_p95_latency_ms is not None and cp > policy.max_p95_latency_ms:
        breaches.append(f"p95 {cp:.1f} ms > absolute limit {policy.max_p95_latency_ms:g} ms")
    d = metrics["disagreement"]
    if d is not None and d > policy.max_disagreement:
        breaches.append(f"disagreement {d:.2f} > {policy.max_disagreement:.2f}")
    if pp is None and not breaches:
        return "inconclusive", metrics, ["no production samples to compare with"]
    return ("fail" if breaches else "pass"), metrics, breaches


class Guard:
    """Counts failures and inconclusive intervals; says continue, advance, pause or roll back."""

    def __init__(self, policy: AnalysisPolicy) -> None:
        self.policy = policy
        self.consecutive_fails = 0
        self.total_fails = 0
        self.consecutive_inconclusive = 0
        self.first_breach_at: float | None = None
        self.reason: str | None = None

    def observe(self, result: Result, t: float, bake_over: bool, breaches: Sequence[str]) -> Action:
        p = self.policy
        if result == "fail":
            self.consecutive_fails += 1
            self.total_fails += 1
            self.consecutive_inconclusive = 0
            if self.consecutive_fails == 1:
                self.first_breach_at = t
            if self.consecutive_fails >= p.consecutive_breaches:
                self.reason = f"{self.consecutive_fails} consecutive breaches: {'; '.join(breaches)}"
                return "rollback"
            if self.total_fails >= p.failure_limit:
                self.reason = (
                    f"failure limit reached ({self.total_fails} failed intervals): {'; '.join(breaches)}"
                )
                return "rollback"
            return "continue"
        self.consecutive_fails = 0
        self.first_breach_at = None
        if result == "inconclusive":
            self.consecutive_inconclusive += 1
            if self.consecutive_inconclusive >= p.inconclusive_limit:
                self.reason = (
                    f"{self.consecutive_inconclusive} inconclusive intervals in a row: {'; '.join(breaches)}"
                )
                return "rollback"
            return "pause" if bake_over else "continue"
        self.consecutive_inconclusive = 0
        return "advance" if bake_over else "continue"


# --------------------------------------------------------------------------- local execution


class StepRecord(BaseModel):
    name: str
    weight: float
    mode: str
    generation: int
    started_s: float
    ended_s: float | None = None
    result: Literal["passed", "failed", "running"] = "running"
    intervals: int = 0
    paused_intervals: int = 0
    reload: dict[str, float] = {}


class BreachTiming(BaseModel):
    first_breach_s: float
    decision_s: float
    rollback_config_live_s: float
    rollback_drained_s: float
    last_candidate_response_s: float | None

    @property
    def breach_to_rollback_s(self) -> float:
        return self.rollback_drained_s - self.first_breach_s

    @property
    def decision_to_rollback_s(self) -> float:
        return self.rollback_drained_s - self.decision_s


class RolloutReport(BaseModel):
    outcome: Literal["promoted", "rolled_back"]
    reason: str
    strategy: str
    target: str
    started_at: datetime
    duration_s: float
    steps: list[StepRecord]
    intervals: list[IntervalAnalysis]
    requests: dict[str, Any]
    throughput_rps: float
    dropped_requests: int
    dropped_production_requests: int
    reloads: int
    breach: BreachTiming | None = None
    diff_clusters: list[dict[str, Any]] = []
    mirrored: dict[str, int] = {}

    def to_markdown(self) -> str:
        lines = [
            f"### Rollout {self.outcome.upper()} on {self.target} ({self.strategy}): {self.reason}",
            "",
            f"- {self.requests['sent']} requests in {self.duration_s:.1f} s ({self.throughput_rps:.1f} req/s), "
            f"by arm {self.requests['by_arm']}; dropped: {self.dropped_requests} "
            f"(production: {self.dropped_production_requests}); {self.reloads} nginx reloads",
        ]
        if self.breach:
            b = self.breach
            lines.append(
                f"- first breach at {b.first_breach_s:.2f} s, rollback decided at {b.decision_s:.2f} s, "
                f"production-only config live at {b.rollback_config_live_s:.2f} s, old workers drained at "
                f"{b.rollback_drained_s:.2f} s: breach to full rollback {b.breach_to_rollback_s:.2f} s "
                f"(decision to rollback {b.decision_to_rollback_s:.2f} s)"
            )
        lines += ["", "| step | share | result | intervals (paused) | t |", "|---|---|---|---|---|"]
        for s in self.steps:
            lines.append(
                f"| {s.name} | {s.weight:g}% | {s.result} | {s.intervals} ({s.paused_intervals}) | "
                f"{s.started_s:.1f}-{(s.ended_s or 0):.1f} s |"
            )
        failing = [i for i in self.intervals if i.result == "fail"][-3:]
        if failing:
            lines += [
                "",
                "Last breaches:",
                *(f"- {i.step} @ {i.t_s:.1f} s: {'; '.join(i.breaches)}" for i in failing),
            ]
        return "\n".join(lines)


ProgressCallback = Callable[[str, dict[str, Any]], None]


def _frame_tags(meta: Sequence[dict[str, Any]], frame: int) -> str:
    m = meta[frame] if frame < len(meta) else {}
    parts = [f"{k}={m[k]}" for k in ("scenario", "weather", "lighting") if k in m]
    return ", ".join(parts) or "untagged"


def diff_clusters(
    samples: Sequence[Sample], meta: Sequence[dict[str, Any]], classes: dict[int, str]
) -> list[dict[str, Any]]:
    """Candidate-vs-production differences grouped by the recorded frames' tags: where the
    candidate disagrees, and which classes it misses or adds there (the mining request's seed)."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        if s.disagreement is not None:
            groups[_frame_tags(meta, s.frame)].append(s)
    out = []
    for tags, group in groups.items():
        missed: Counter[str] = Counter()
        extra: Counter[str] = Counter()
        for s in group:
            missed.update({classes.get(c, str(c)): n for c, n in s.missed.items()})
            extra.update({classes.get(c, str(c)): n for c, n in s.extra.items()})
        out.append(
            {
                "cluster": tags,
                "samples": len(group),
                "frames": len({s.frame for s in group}),
                "mean_disagreement": round(float(np.mean([s.disagreement for s in group])), 4),
                "missed": dict(missed.most_common()),
                "extra": dict(extra.most_common()),
                "example_frames": sorted({s.frame for s in group if (s.disagreement or 0) > 0})[:8],
            }
        )
    return sorted(out, key=lambda c: -c["mean_disagreement"])


class LocalRollout:
    """Execute a plan for real: Triton(production) + Triton(candidate) behind nginx, replayed traffic."""

    def __init__(
        self,
        plan: PromotionPlan,
        *,
        production_repository: Path,
        candidate_repository: Path,
        frames: np.ndarray,
        frame_meta: Sequence[dict[str, Any]] | None = None,
        class_names: dict[int, str] | None = None,
        concurrency: int = 4,
        drain_timeout_s: float = 30.0,
        workdir: Path | None = None,
        triton_venv: Path | None = None,
        progress: ProgressCallback | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.production_repository = Path(production_repository)
        self.candidate_repository = Path(candidate_repository)
        self.frames = frames
        self.frame_meta = list(frame_meta or [{} for _ in range(len(frames))])
        self.class_names = class_names or {}
        self.concurrency = concurrency
        self.drain_timeout_s = drain_timeout_s
        self.workdir = workdir
        self.triton_venv = triton_venv
        self.progress = progress or (lambda kind, data: None)
        self.clock = clock

    def run(self) -> RolloutReport:
        from adas.packaging.triton_server import TritonServer, free_port

        work = Path(self.workdir or tempfile.mkdtemp(prefix="rollout-"))
        work.mkdir(parents=True, exist_ok=True)
        nginx_dir = work / "nginx"
        shutil.rmtree(nginx_dir, ignore_errors=True)
        started_at = datetime.now(UTC)
        codec = RequestCodec(self.frames)
        prod = TritonServer(
            self.production_repository, venv=self.triton_venv, log_path=work / "triton-production.log"
        )
        cand = TritonServer(
            self.candidate_repository, venv=self.triton_venv, log_path=work / "triton-candidate.log"
        )
        nginx: NginxSplitter | None = None
        driver: ReplayDriver | None = None
        try:
            prod.start()
            cand.start()
            port = free_port(exclude={prod.http_port, prod.grpc_port, cand.http_port, cand.grpc_port})
            nginx = NginxSplitter(nginx_dir, port, prod.http_port, cand.http_port)
            nginx.start(Split(0))
            driver = ReplayDriver(
                "127.0.0.1",
                port,
                self.plan.model_name,
                codec,
                concurrency=self.concurrency,
                cohort_header=self.plan.cohort_header,
                shadow_sample_rate=self.plan.shadow_diff_sample_rate,
                min_score=self.plan.analysis.disagreement_min_score,
                disagreement_mode=self.plan.analysis.disagreement_mode,
            )
            return self._drive(nginx, driver, ("127.0.0.1", cand.http_port), started_at, cand)
        finally:
            if driver is not None:
                driver.stop()
            if nginx is not None:
                nginx.stop()
            cand.stop()
            prod.stop()

    # ------------------------------------------------------------------ the control loop
    def _drive(
        self,
        nginx: NginxSplitter,
        driver: ReplayDriver,
        candidate_direct: tuple[str, int],
        started_at: datetime,
        candidate_server: Any,
    ) -> RolloutReport:
        plan, policy = self.plan, self.plan.analysis
        # Pre-deploy warm-up of the candidate (lazy model initialization, first ORT runs), so the
        # first canary requests measure the model and not its cold start.
        warm = driver.warm_up(candidate_direct, rounds=2)
        self.progress("candidate_warmed_up", warm)
        t0 = self.clock()
        driver.start()
        # Baseline: production only, until every recorded frame has a reference answer.
        deadline = t0 + max(policy.baseline_s * 10, 30.0)
        while self.clock() - t0 < policy.baseline_s or len(driver.reference) < len(self.frames):
            if self.clock() > deadline:
                break
            time.sleep(0.05)
        self.progress(
            "baseline", {"seconds": round(self.clock() - t0, 2), "references": len(driver.reference)}
        )
        guard = Guard(policy)
        shadow_log = AccessLogTail(nginx.prefix / "shadow.log")
        access_log = AccessLogTail(nginx.prefix / "access.log")
        steps: list[StepRecord] = []
        intervals: list[IntervalAnalysis] = []
        outcome: Literal["promoted", "rolled_back"] = "promoted"
        reason = f"all {len(plan.steps)} steps passed"
        breach: BreachTiming | None = None
        for step in plan.steps:
            split = Split(
                step.weight,
                mode=step.mode,
                cohort_header=plan.cohort_header,
                mirror_percent=step.mirror_percent,
            )
            driver.set_shadow(candidate_direct if step.mode == "shadow" else None)
            timing = nginx.apply(split, self.drain_timeout_s)
            rec = StepRecord(
                name=step.name,
                weight=step.weight,
                mode=step.mode,
                generation=nginx.generation,
                started_s=self.clock() - t0,
                reload={k: round(v, 4) for k, v in timing.items() if k != "signaled_at"},
            )
            steps.append(rec)
            self.progress("step_started", rec.model_dump())
            step_start = self.clock()
            action: Action = "continue"
            while True:
                time.sleep(policy.interval_s)
                now = self.clock()
                diffs: list[float] | None = None
                if step.mode == "shadow":
                    # Mirrored answers are discarded by nginx: time both arms server-side (from
                    # nginx's logs), and take disagreement from the sampled shadow diffs.
                    shadow_log.poll()
                    access_log.poll()
                    cand = [s for s in shadow_log.samples if s.generation == rec.generation]
                    cand = cand[-policy.window_samples :]
                    since = cand[0].t_start if cand else step_start
                    prod = [s for s in access_log.samples if s.arm == "production" and s.t_start >= since]
                    diffs = [
                        s.disagreement
                        for s in driver.samples
                        if s.arm == "shadow" and s.t_start >= step_start and s.disagreement is not None
                    ][-policy.window_samples :]
                else:
                    cand = [
                        s for s in driver.samples if s.arm == "candidate" and s.generation == rec.generation
                    ]
                    cand = cand[-policy.window_samples :]
                    since = cand[0].t_start if cand else step_start
                    prod = [s for s in driver.samples if s.arm == "production" and s.ok]
                    recent = [s for s in prod if s.t_start >= since]
                    # At 100% nothing goes to production any more: compare with its latest answers.
                    prod = (recent if len(recent) >= policy.min_samples else prod)[
                        -4 * policy.window_samples :
                    ]
                result, metrics, breaches = analyze_window(cand, prod, policy, diffs)
                bake_over = now - step_start >= step.bake_s
                action = guard.observe(result, now - t0, bake_over, breaches)
                if now - t0 > policy.progress_deadline_s and action not in ("rollback", "advance"):
                    action = "rollback"
                    guard.reason = f"progress deadline of {policy.progress_deadline_s:g} s exceeded"
                ia = IntervalAnalysis(
                    step=step.name,
                    index=len(intervals),
                    t_s=round(now - t0, 3),
                    candidate_samples=len(cand),
                    production_samples=len(prod),
                    result=result,
                    breaches=breaches if result != "pass" else [],
                    action=action,
                    **{k: (None if v is None else round(v, 4)) for k, v in metrics.items()},
                )
                intervals.append(ia)
                rec.intervals += 1
                rec.paused_intervals += action == "pause"
                if action in ("rollback", "advance"):
                    break
            rec.ended_s = self.clock() - t0
            if action == "rollback":
                rec.result = "failed"
                decision = self.clock()
                outcome, reason = "rolled_back", guard.reason or "analysis failed"
                self.progress("rollback_decided", {"step": step.name, "reason": reason})
                driver.set_shadow(None)
                rb = nginx.apply(Split(0), self.drain_timeout_s)
                live = rb["signaled_at"] + rb["new_config_s"]
                drained = rb["signaled_at"] + rb["drained_s"]
                first = guard.first_breach_at if guard.first_breach_at is not None else decision - t0
                # Keep replaying a moment: production must keep answering every request.
                time.sleep(max(policy.interval_s, 1.0))
                last_cand = max((s.t_end for s in driver.samples if s.arm == "candidate"), default=None)
                breach = BreachTiming(
                    first_breach_s=round(first, 3),
                    decision_s=round(decision - t0, 3),
                    rollback_config_live_s=round(live - t0, 3),
                    rollback_drained_s=round(drained - t0, 3),
                    last_candidate_response_s=round(last_cand - t0, 3) if last_cand else None,
                )
                self.progress("rolled_back", {"reason": reason, **breach.model_dump()})
                break
            rec.result = "passed"
            self.progress("step_passed", rec.model_dump())
        else:
            time.sleep(min(policy.interval_s, 0.5))
        driver.stop()
        duration = self.clock() - t0
        counts = driver.counts()
        dropped_prod = counts["failed_by_arm"].get("production", 0) + counts["failed_by_arm"].get(
            "unknown", 0
        )
        mirrored = _count_log(nginx.prefix / "shadow.log")
        return RolloutReport(
            outcome=outcome,
            reason=reason,
            strategy=plan.strategy,
            target=plan.target,
            started_at=started_at,
            duration_s=round(duration, 3),
            steps=steps,
            intervals=intervals,
            requests=counts,
            throughput_rps=round(counts["sent"] / duration, 2) if duration > 0 else 0.0,
            dropped_requests=counts["failed"],
            dropped_production_requests=dropped_prod,
            reloads=len(nginx.reloads),
            breach=breach,
            diff_clusters=diff_clusters(driver.samples, self.frame_meta, self.class_names),
            mirrored=mirrored,
        )


def _count_log(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    statuses = Counter(
        parts[2]
        for line in path.read_text().splitlines()
        if len(parts := line.split()) > 3 and parts[3] != "-"
    )
    return {"mirrored": sum(statuses.values()), "mirrored_ok": statuses.get("200", 0)}


# --------------------------------------------------------------------------- production renderings


def _k8s_name(*parts: str) -> str:
    return "-".join(p.lower().replace("/", "-").replace("_", "-").replace(".", "-") for p in parts)[
        :63
    ].strip("-")


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
    name = _k8s_name(plan.model_name, plan.target)
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
    base = _k8s_name(plan.model_name, plan.target)
    if device == "orin":
        return {
            "applicable": False,
            "reason": "orin is a vehicle ECU: deployed over the air to the fleet, not to a SageMaker endpoint",
        }
    instance = _SAGEMAKER_INSTANCE.get(device, "ml.c5.2xlarge")
    cand_variant = _k8s_name("candidate", plan.candidate_version)
    prod_variant = _k8s_name("production", plan.production_version or "none")
    cand_model = _k8s_name(plan.model_name, plan.candidate_version, plan.target)
    periods = a.consecutive_breaches

    def variant_sum(metric_id: str, metric_name: str) -> dict[str, Any]:
        """A metric-math input: the candidate variant's ``metric_name`` summed per period."""
        metric = {
            "Namespace": "AWS/SageMaker",
            "MetricName": metric_name,
            "Dimensions": [
                {"Name": "EndpointName", "Value": base},
                {"Name": "VariantName", "Value": cand_variant},
            ],
        }
        return {
            "Id": metric_id,
            "MetricStat": {"Metric": metric, "Period": production_interval_s, "Stat": "Sum"},
            "ReturnData": False,
        }

    alarms = [
        {
            "AlarmName": f"{base}-{cand_variant}-p95-latency",
            "Namespace": "AWS/SageMaker",
            "MetricName": "ModelLatency",
            "Dimensions": [
                {"Name": "EndpointName", "Value": base},
                {"Name": "VariantName", "Value": cand_variant},
            ],
            "ExtendedStatistic": "p95",
            "Period": production_interval_s,
            "EvaluationPeriods": periods,
            "DatapointsToAlarm": periods,
            "Threshold": float((a.max_p95_latency_ms or 1000.0) * 1000.0),  # ModelLatency is in microseconds
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
        {
            "AlarmName": f"{base}-{cand_variant}-error-rate",
            "Metrics": [
                variant_sum("errors", "Invocation5XXErrors"),
                variant_sum("invocations", "Invocations"),
                {
                    "Id": "rate",
                    "Expression": "IF(invocations > 0, errors / invocations, 0)",
                    "ReturnData": True,
                },
            ],
            "EvaluationPeriods": periods,
            "DatapointsToAlarm": periods,
            "Threshold": a.max_error_rate,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
        {
            "AlarmName": f"{base}-{cand_variant}-disagreement",
            "Namespace": "ADAS/Rollout",
            "MetricName": "CandidateDisagreement",
            "Dimensions": [
                {"Name": "EndpointName", "Value": base},
                {"Name": "VariantName", "Value": cand_variant},
            ],
            "Statistic": "Average",
            "Period": production_interval_s,
            "EvaluationPeriods": periods,
            "DatapointsToAlarm": periods,
            "Threshold": a.max_disagreement,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        },
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
        "EndpointConfigName": _k8s_name(base, plan.candidate_version, "rollout"),
        "DataCaptureConfig": {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100 if first.mode == "shadow" else 25,
            "DestinationS3Uri": capture_s3_uri,
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        },
    }
    prod = {
        "VariantName": prod_variant,
        "ModelName": _k8s_name(plan.model_name, plan.production_version or "none", plan.target),
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
            "EndpointConfigName": _k8s_name(base, plan.candidate_version),
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


def plan_documents(plan: PromotionPlan, **kwargs: Any) -> dict[str, str]:
    """``{file name: text}`` of the plan's production renderings."""
    argo = render_argo_rollout(
        plan,
        image=kwargs["image"],
        model_repository_uri=kwargs["model_repository_uri"],
        node_selector=kwargs.get("node_selector"),
        tolerations=kwargs.get("tolerations"),
        gpu_count=kwargs.get("gpu_count", 0),
    )
    sm = render_sagemaker_deployment(plan, image=kwargs["image"], model_data_url=kwargs["model_data_url"])
    return {
        "plan.json": plan.model_dump_json(indent=2),
        "argo_rollout.yaml": argo,
        "sagemaker_deployment.json": json.dumps(sm, indent=2),
    }
