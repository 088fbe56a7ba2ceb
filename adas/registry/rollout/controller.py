"""The local canary: a plan executed for real on one machine.

The production and candidate packs' Triton repositories are served by two real Triton servers
behind Debian's nginx (weighted split regenerated and reloaded per step), driven by replayed
recorded requests; every ``interval_s`` the guard (:mod:`.analysis`) compares the candidate's
newest samples with a baseline over the same period and decides.
"""

import importlib
import re
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from adas.packaging.triton_server import TritonServer, free_port
from adas.registry.config import AnalysisPolicy
from adas.registry.nginx import ArmModels, NginxSplitter, Split
from adas.registry.rollout.analysis import (
    Action,
    Guard,
    IntervalAnalysis,
    WindowVerdict,
    analyze_window,
    diff_clusters,
)
from adas.registry.rollout.plan import PlanStep, PromotionPlan
from adas.registry.rollout.report import BreachTiming, RolloutReport, StepRecord
from adas.registry.traffic import AccessLogTail, ReplayDriver, RequestCodec, Sample

ProgressCallback = Callable[[str, dict[str, Any]], None]


def served_model_name(repository: str | Path) -> str:
    """The ensemble a Triton repository serves: the one model whose ``config.pbtxt`` declares
    ``platform: "ensemble"`` (read from the repository itself, which is what Triton serves; a
    registry entry's repository carries no other record of it)."""
    root = Path(repository)
    ensembles = sorted(
        _pbtxt_name(config)
        for config in root.glob("*/config.pbtxt")
        if _ENSEMBLE_PLATFORM.search(config.read_text(errors="replace"))
    )
    if len(ensembles) != 1:
        found = ", ".join(ensembles) or "none"
        raise ValueError(f"{root}: a served repository holds exactly one ensemble; found {found}")
    return ensembles[0]


_ENSEMBLE_PLATFORM = re.compile(r'^\s*platform\s*:\s*"ensemble"', re.MULTILINE)
_NAME = re.compile(r'^\s*name\s*:\s*"([^"]+)"', re.MULTILINE)


def _pbtxt_name(config: Path) -> str:
    """A model config's ``name`` (Triton defaults it to the directory's name)."""
    match = _NAME.search(config.read_text(errors="replace"))
    return match.group(1) if match else config.parent.name


@dataclass
class _Run:
    """The state of one rollout while it runs."""

    nginx: NginxSplitter
    driver: ReplayDriver
    candidate_direct: tuple[str, int]
    t0: float
    guard: Guard
    shadow_log: AccessLogTail
    access_log: AccessLogTail
    steps: list[StepRecord] = field(default_factory=list)
    intervals: list[IntervalAnalysis] = field(default_factory=list)
    # Production's answers per second alone, and the paced rate offered after the baseline.
    capacity_rps: float | None = None
    offered_rps: float | None = None


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
        load_fraction: float | None = None,
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
        self.load_fraction = load_fraction
        self.drain_timeout_s = drain_timeout_s
        self.workdir = workdir
        self.triton_venv = triton_venv
        self.progress = progress or (lambda kind, data: None)
        self.clock = clock

    def run(self) -> RolloutReport:
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
            models = ArmModels(
                production=served_model_name(self.production_repository),
                candidate=served_model_name(self.candidate_repository),
            )
            nginx = NginxSplitter(nginx_dir, port, prod.http_port, cand.http_port, models)
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
                direct_model=models.candidate,
            )
            return self._drive(nginx, driver, ("127.0.0.1", cand.http_port), started_at)
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
    ) -> RolloutReport:
        run = self._start(nginx, driver, candidate_direct)
        outcome: Literal["promoted", "rolled_back"] = "promoted"
        reason = f"all {len(self.plan.steps)} steps passed"
        breach: BreachTiming | None = None
        for step in self.plan.steps:
            rec, action = self._run_step(run, step)
            if action == "rollback":
                rec.result = "failed"
                decision = self.clock()
                outcome, reason = "rolled_back", run.guard.reason or "analysis failed"
                self.progress("rollback_decided", {"step": step.name, "reason": reason})
                breach = self._roll_back(run, decision)
                self.progress("rolled_back", {"reason": reason, **breach.model_dump()})
                break
            rec.result = "passed"
            self.progress("step_passed", rec.model_dump())
        else:
            time.sleep(min(self.plan.analysis.interval_s, 0.5))
        driver.stop()
        return self._report(run, started_at, outcome, reason, breach)

    def _start(self, nginx: NginxSplitter, driver: ReplayDriver, candidate_direct: tuple[str, int]) -> _Run:
        """Warm the candidate up, start replaying, wait for production's reference answers."""
        policy = self.plan.analysis
        # The rank test's scipy.stats import took ~10 s on a loaded 2-core host: pay it here,
        # not inside the first analysis interval (it would stall the control loop).
        importlib.import_module("scipy.stats")
        # Pre-deploy warm-up of the candidate (lazy model initialization, first ORT runs), so the
        # first canary requests measure the model and not its cold start.
        warm = driver.warm_up(candidate_direct, rounds=2)
        self.progress("candidate_warmed_up", warm)
        t0 = self.clock()
        measured_from = time.monotonic()
        driver.start()
        # Baseline: production only, until every recorded frame has a reference answer.
        deadline = t0 + max(policy.baseline_s * 10, 30.0)
        while self.clock() - t0 < policy.baseline_s or len(driver.reference) < len(self.frames):
            if self.clock() > deadline:
                break
            time.sleep(0.05)
        capacity = _answered_per_second(driver.samples, "production", measured_from)
        offered = self.load_fraction * capacity if self.load_fraction is not None and capacity > 0 else None
        driver.pace(offered)
        self.progress(
            "baseline",
            {
                "seconds": round(self.clock() - t0, 2),
                "references": len(driver.reference),
                "capacity_rps": round(capacity, 1),
                "offered_rps": None if offered is None else round(offered, 1),
            },
        )
        return _Run(
            capacity_rps=round(capacity, 2),
            offered_rps=None if offered is None else round(offered, 2),
            nginx=nginx,
            driver=driver,
            candidate_direct=candidate_direct,
            t0=t0,
            guard=Guard(policy),
            shadow_log=AccessLogTail(nginx.prefix / "shadow.log"),
            access_log=AccessLogTail(nginx.prefix / "access.log"),
        )

    def _run_step(self, run: _Run, step: PlanStep) -> tuple[StepRecord, Action]:
        """Apply the step's split, then analyze every interval until the guard advances or rolls
        back (a step without a verdict at the end of its bake time is held for more evidence)."""
        policy = self.plan.analysis
        split = Split(
            step.weight,
            mode=step.mode,
            cohort_header=self.plan.cohort_header,
            mirror_percent=step.mirror_percent,
        )
        run.driver.set_shadow(run.candidate_direct if step.mode == "shadow" else None)
        run.driver.set_baseline_probes(_probes_baseline(step))
        timing = run.nginx.apply(split, self.drain_timeout_s)
        rec = StepRecord(
            name=step.name,
            weight=step.weight,
            mode=step.mode,
            generation=run.nginx.generation,
            started_s=self.clock() - run.t0,
            reload={k: round(v, 4) for k, v in timing.items() if k != "signaled_at"},
        )
        run.steps.append(rec)
        self.progress("step_started", rec.model_dump())
        step_start = self.clock()
        action: Action = "continue"
        while action not in ("rollback", "advance"):
            time.sleep(policy.interval_s)
            now = self.clock()
            cand, base, diffs = self._window(run, step, rec, step_start)
            verdict = analyze_window(cand, base, policy, diffs)
            action = run.guard.observe(verdict, now - run.t0, now - step_start, step.bake_s)
            if now - run.t0 > policy.progress_deadline_s and action not in ("rollback", "advance"):
                action = "rollback"
                last = "; ".join(verdict.reasons) or verdict.result
                run.guard.reason = f"progress deadline of {policy.progress_deadline_s:g} s exceeded: {last}"
            run.intervals.append(self._interval(run, step, now, cand, base, verdict, action))
            rec.intervals += 1
            if action == "hold":
                rec.paused_intervals += 1
                self.progress("step_held", {"step": step.name, "reason": run.guard.hold_reason})
        rec.ended_s = self.clock() - run.t0
        rec.extended_s = round(max(0.0, rec.ended_s - rec.started_s - step.bake_s), 3)
        run.driver.set_baseline_probes(False)
        return rec, action

    @staticmethod
    def _interval(
        run: _Run,
        step: PlanStep,
        now: float,
        cand: Sequence[Sample],
        base: Sequence[Sample],
        verdict: WindowVerdict,
        action: Action,
    ) -> IntervalAnalysis:
        return IntervalAnalysis(
            step=step.name,
            index=len(run.intervals),
            t_s=round(now - run.t0, 3),
            candidate_samples=len(cand),
            baseline_samples=len(base),
            result=verdict.result,
            reasons=verdict.reasons,
            action=action,
            **{k: _rounded(v) for k, v in verdict.metrics.items()},
        )

    def _window(
        self, run: _Run, step: PlanStep, rec: StepRecord, step_start: float
    ) -> tuple[list[Sample], list[Sample], list[float] | None]:
        """The candidate's window of the step (:func:`_window_of`), the baseline's over the same
        period, and the disagreements to judge (``None``: the candidate samples' own)."""
        policy = self.plan.analysis
        driver = run.driver
        if step.mode == "shadow":
            # Mirrored answers are discarded by nginx: time both arms server-side (from
            # nginx's logs), and take disagreement from the sampled shadow diffs.
            run.shadow_log.poll()
            run.access_log.poll()
            cand = _window_of(
                [s for s in run.shadow_log.samples if s.generation == rec.generation], policy, self.clock()
            )
            since = cand[0].t_start if cand else step_start
            base = [s for s in run.access_log.samples if s.arm == "production" and s.t_start >= since]
            diffs = [
                s.disagreement
                for s in driver.samples
                if s.arm == "shadow" and s.t_start >= step_start and s.disagreement is not None
            ][-policy.window_samples :]
            return cand, _spread(base, _BASELINE_PER_WINDOW * policy.window_samples), diffs
        cand = _window_of(
            [s for s in driver.samples if s.arm == "candidate" and s.generation == rec.generation],
            policy,
            self.clock(),
        )
        since = cand[0].t_start if cand else step_start
        # The same period as the candidate's window, never older answers: a host that is busy
        # now and was quiet then would make an identical candidate look slower.
        arm = "baseline" if _probes_baseline(step) else "production"
        base = [s for s in driver.samples if s.arm == arm and s.t_start >= since]
        return cand, _spread(base, _BASELINE_PER_WINDOW * policy.window_samples), None

    def _roll_back(self, run: _Run, decision: float) -> BreachTiming:
        """Production only again (old workers drained); how long each part took."""
        t0 = run.t0
        run.driver.set_shadow(None)
        rb = run.nginx.apply(Split(0), self.drain_timeout_s)
        live = rb["signaled_at"] + rb["new_config_s"]
        drained = rb["signaled_at"] + rb["drained_s"]
        first = run.guard.first_breach_at if run.guard.first_breach_at is not None else decision - t0
        # Keep replaying a moment: production must keep answering every request.
        time.sleep(max(self.plan.analysis.interval_s, 1.0))
        last_cand = max((s.t_end for s in run.driver.samples if s.arm == "candidate"), default=None)
        return BreachTiming(
            first_breach_s=round(first, 3),
            decision_s=round(decision - t0, 3),
            rollback_config_live_s=round(live - t0, 3),
            rollback_drained_s=round(drained - t0, 3),
            last_candidate_response_s=round(last_cand - t0, 3) if last_cand else None,
        )

    def _report(
        self,
        run: _Run,
        started_at: datetime,
        outcome: Literal["promoted", "rolled_back"],
        reason: str,
        breach: BreachTiming | None,
    ) -> RolloutReport:
        duration = self.clock() - run.t0
        counts = run.driver.counts()
        failed = counts["failed_by_arm"]
        return RolloutReport(
            outcome=outcome,
            reason=reason,
            strategy=self.plan.strategy,
            target=self.plan.target,
            started_at=started_at,
            duration_s=round(duration, 3),
            steps=run.steps,
            intervals=run.intervals,
            requests=counts,
            throughput_rps=round(counts["sent"] / duration, 2) if duration > 0 else 0.0,
            capacity_rps=run.capacity_rps,
            offered_rps=run.offered_rps,
            dropped_requests=counts["failed"],
            dropped_production_requests=failed.get("production", 0) + failed.get("unknown", 0),
            reloads=len(run.nginx.reloads),
            breach=breach,
            diff_clusters=diff_clusters(run.driver.samples, self.frame_meta, self.class_names),
            mirrored=_count_log(run.nginx.prefix / "shadow.log"),
        )


def _answered_per_second(samples: Sequence[Sample], arm: str, since: float) -> float:
    """Requests ``arm`` answered per second from ``since`` to its last answer (its capacity while
    the clients sent as fast as they were answered)."""
    ends = [s.t_end for s in list(samples) if s.arm == arm and s.ok and s.t_start >= since]
    return len(ends) / (max(ends) - since) if ends and max(ends) > since else 0.0


# Baseline samples kept per window, per candidate sample allowed: enough for the rank test's
# power, few enough that the baseline does not outweigh the canary's own evidence.
_BASELINE_PER_WINDOW = 4


def _probes_baseline(step: PlanStep) -> bool:
    """Whether the step needs baseline probes: when the candidate serves more than half of the
    requests, production's own arm is lighter loaded (or idle at 100%) than the candidate, so
    its latencies are no fair baseline; the probes put production under the same load."""
    return step.mode != "shadow" and step.weight > 50


def _window_of(samples: Sequence[Sample], policy: AnalysisPolicy, now: float) -> list[Sample]:
    """The newest ``window_samples`` of ``samples``, or, when more arrived in the last
    ``window_s``, that many spread evenly over it. Requests close in time share the host's
    bursts of load (a second's requests are a handful of independent samples, not 40); spread
    over seconds they are nearer to what the rank test assumes."""
    recent = [s for s in samples if s.t_start >= now - policy.window_s]
    if len(recent) < policy.window_samples:
        return list(samples[-policy.window_samples :])
    return _spread(recent, policy.window_samples)


def _rounded(value: float | None) -> float | None:
    """Four significant digits: a p-value of 7e-23 stays 7e-23 (a fixed number of decimals
    would record it as 0)."""
    return None if value is None else float(f"{value:.4g}")


def _spread(samples: Sequence[Sample], k: int) -> list[Sample]:
    """At most ``k`` of ``samples``, evenly spread over their period (not the newest ``k``, which
    would cover a shorter period than the candidate's window)."""
    if len(samples) <= k:
        return list(samples)
    picks = np.linspace(0, len(samples) - 1, k).round().astype(int)
    return [samples[i] for i in picks]


def _count_log(path: Path) -> dict[str, int]:
    if not path.exists():
        return {}
    statuses = Counter(
        parts[2]
        for line in path.read_text().splitlines()
        if len(parts := line.split()) > 3 and parts[3] != "-"
    )
    return {"mirrored": sum(statuses.values()), "mirrored_ok": statuses.get("200", 0)}
