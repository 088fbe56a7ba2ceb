"""The registry policy (``config/registry.yaml``): governance, rollout, retention."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import load_yaml_model
from adas.registry.models import ROLES

POLICY_FILE = Path(__file__).resolve().parents[2] / "config" / "registry.yaml"
POLICY_ENV = "ADAS_REGISTRY_POLICY"
Strategy = Literal["shadow", "canary", "ab"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class VulnerabilityPolicy(_Strict):
    block_severities: list[Literal["critical", "high", "medium", "low", "unknown"]] = ["critical", "high"]
    waiver_min_chars: int = Field(default=40, ge=1)


class GovernancePolicy(_Strict):
    required_approvals: list[str] = list(ROLES)
    vulnerabilities: VulnerabilityPolicy = VulnerabilityPolicy()
    # Who may accept an amber ("insufficient evidence") gate verdict, by quoting its intervals.
    amber_accept_roles: list[str] = ["technical", "safety"]
    require_newer_version: bool = True
    require_license_pass: bool = True

    @field_validator("required_approvals", "amber_accept_roles")
    @classmethod
    def _roles(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown roles {unknown}; roles are {list(ROLES)}")
        return v


class CanaryStep(_Strict):
    weight: float = Field(gt=0, le=100, description="percent of requests to the candidate")
    bake_s: float = Field(gt=0)


class CanaryPolicy(_Strict):
    steps: list[CanaryStep] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> CanaryPolicy:
        weights = [s.weight for s in self.steps]
        if weights != sorted(weights) or len(set(weights)) != len(weights):
            raise ValueError(f"canary weights must strictly increase, got {weights}")
        if weights[-1] != 100:
            raise ValueError(f"the last canary step must send 100% to the candidate, got {weights[-1]}")
        return self


class ShadowPolicy(_Strict):
    bake_s: float = Field(default=15, gt=0)
    mirror_percent: float = Field(default=100, gt=0, le=100)
    diff_sample_rate: float = Field(default=0.25, gt=0, le=1)


class ABPolicy(_Strict):
    weight: float = Field(default=50, gt=0, lt=100)
    bake_s: float = Field(default=20, gt=0)
    cohort_header: str = "X-Vehicle-Id"


class AnalysisPolicy(_Strict):
    """How the guard judges each interval of a step (values and reasons: ``config/registry.yaml``)."""

    interval_s: float = Field(default=1.0, gt=0)
    window_samples: int = Field(default=40, ge=1)
    window_s: float = Field(default=10.0, gt=0, description="the period a busy window is spread over")
    min_window_span_s: float = Field(default=5.0, ge=0, description="before it, latency is not judged")
    min_samples: int = Field(default=10, ge=3, description="per arm, below which a window is inconclusive")
    # Latency: the canary against the baseline over the same window (one-sided Mann-Whitney U);
    # a window fails only when the difference is significant AND large.
    latency_alpha: float = Field(default=0.01, gt=0, lt=0.5)
    min_latency_median_ratio: float = Field(default=1.5, ge=1)
    min_latency_effect: float = Field(default=0.7, gt=0.5, le=1, description="P(canary > baseline)")
    max_p95_latency_ms: float | None = Field(default=None, gt=0)
    # A Prometheus query cannot run a rank test: the Argo rendering keeps a p95 ratio; the local
    # guard does not read it.
    max_p95_latency_ratio: float = Field(default=1.5, gt=0)
    max_error_rate: float = Field(default=0.01, ge=0, le=1)
    max_disagreement: float = Field(default=0.25, ge=0, le=1)
    disagreement_mode: Literal["misses", "symmetric"] = "misses"
    disagreement_min_score: float = Field(default=0.5, ge=0, le=1)
    consecutive_breaches: int = Field(default=3, ge=1)
    failure_limit: int = Field(default=6, ge=1)
    max_extension_s: float = Field(default=60, ge=0)
    # Argo's inconclusiveLimit in the rendered AnalysisTemplate; locally max_extension_s bounds holds.
    inconclusive_limit: int = Field(default=30, ge=1)
    progress_deadline_s: float = Field(default=240, gt=0)
    baseline_s: float = Field(default=3.0, gt=0)

    @model_validator(mode="after")
    def _windows_can_decide(self) -> AnalysisPolicy:
        if self.min_samples > self.window_samples:
            raise ValueError(
                f"min_samples ({self.min_samples}) must not exceed window_samples ({self.window_samples}): "
                "every window would be inconclusive"
            )
        if self.min_window_span_s > self.window_s:
            raise ValueError(
                f"min_window_span_s ({self.min_window_span_s:g}) must not exceed window_s ({self.window_s:g}): "
                "a busy window would never span enough to judge latency"
            )
        return self


class LocalRolloutPolicy(_Strict):
    concurrency: int = Field(default=4, ge=1, le=64)
    # Offered load once the baseline is measured, as a share of production's capacity (requests
    # answered per second while it served alone); null: every client as fast as it is answered.
    load_fraction: float | None = Field(default=0.5, gt=0, le=1)
    max_frames: int = Field(default=48, ge=1)
    drain_timeout_s: float = Field(default=30, gt=0)


class RolloutPolicy(_Strict):
    strategy: Strategy = "canary"
    canary: CanaryPolicy
    shadow: ShadowPolicy = ShadowPolicy()
    ab: ABPolicy = ABPolicy()
    analysis: AnalysisPolicy = AnalysisPolicy()
    local: LocalRolloutPolicy = LocalRolloutPolicy()


class RetentionPolicy(_Strict):
    heavy_patterns: list[str] = []
    keep_versions: int = Field(default=2, ge=1)


class WebhookPolicy(_Strict):
    timeout_s: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)


class IamPolicy(_Strict):
    bucket: str = "adas-artifacts"
    prefix: str = "gold"
    consumer_role_arn: str | None = None  # the role the policy document is attached to
    ecr_repository_arn: str | None = None


class RegistryPolicy(_Strict):
    version: Literal[1]
    governance: GovernancePolicy = GovernancePolicy()
    rollout: RolloutPolicy
    retention: RetentionPolicy = RetentionPolicy()
    webhook: WebhookPolicy = WebhookPolicy()
    iam: IamPolicy


def load_policy(path: Path | str | None = None) -> RegistryPolicy:
    """``path``, else ``$ADAS_REGISTRY_POLICY``, else ``config/registry.yaml``."""
    if path is None:
        path = os.environ.get(POLICY_ENV) or POLICY_FILE
    return load_yaml_model(Path(path), RegistryPolicy)


__all__ = ["RegistryPolicy", "load_policy"]
