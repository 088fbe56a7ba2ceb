"""The promotion plan: strategy steps (shadow, canary, A/B) and the analysis that guards them."""

from typing import Literal

from pydantic import BaseModel, Field

from adas.registry.config import AnalysisPolicy, RolloutPolicy, Strategy


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
            f"Analysis every {a.interval_s:g} s over {a.window_samples} candidate samples (the newest, "
            f"spread over the last {a.window_s:g} s when more arrived) against a production baseline "
            f"over the same period (min {a.min_samples} each): latency "
            f"fails when a one-sided Mann-Whitney U test is significant (p < {a.latency_alpha:g}) and the "
            f"effect is large (median ratio >= {a.min_latency_median_ratio:g}, P(canary > baseline) >= "
            f"{a.min_latency_effect:g}); disagreement ({a.disagreement_mode} of detections scored >= "
            f"{a.disagreement_min_score:g}) <= {a.max_disagreement:.2f}. "
            f"Rollback after {a.consecutive_breaches} failed windows in a row or {a.failure_limit} in all, "
            f"at once on an error rate > {a.max_error_rate:.2%}"
            + (f" or a candidate p95 > {a.max_p95_latency_ms:g} ms" if a.max_p95_latency_ms else "")
            + f"; a step without a verdict is held for more evidence (at most {a.max_extension_s:g} s "
            f"past its bake time); progress deadline {a.progress_deadline_s:g} s."
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


def k8s_name(*parts: str) -> str:
    """A Kubernetes / SageMaker resource name from ``parts`` (lower case, dashes, <= 63 chars)."""
    return "-".join(p.lower().replace("/", "-").replace("_", "-").replace(".", "-") for p in parts)[
        :63
    ].strip("-")
