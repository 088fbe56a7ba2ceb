"""The target catalog (``config/targets.yaml``): devices, runtimes, precisions and budgets.

The ``device`` x ``precision`` partitions, the Kubernetes placement of each partition's runs
and the latency gates are all derived from this one file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import ConfigError, load_yaml_model
from adas.cpu_isa import Isa
from adas.settings import CONFIG_DIR

TARGETS_FILE = CONFIG_DIR / "targets.yaml"
Precision = Literal["fp32", "fp16", "int8"]
Runtime = Literal["onnxruntime", "tensorrt"]
# Dagster static partition keys may not contain these characters.
_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Toleration(_Strict):
    key: str
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class KubernetesPlacement(_Strict):
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    gpu_count: int = Field(ge=0, le=8)
    cpu: str = "1"
    memory: str = "4Gi"


class LatencyBudget(_Strict):
    p95: float = Field(gt=0, description="p95 latency budget at batch 1, milliseconds")


class Target(_Strict):
    description: str = ""
    runtime: Runtime
    precisions: list[Precision] = Field(min_length=1)
    latency_budget_ms: LatencyBudget
    kubernetes: KubernetesPlacement
    # The x86 instruction-set level of a CPU target's nodes: it picks the INT8 recipe
    # (reduce_range only without VNNI) and where its latency may be measured.
    isa: Isa | None = None
    # Automation builds this device on a local (non-production) deployment; GPU devices never.
    local_automation: bool = True

    @field_validator("precisions")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate precisions: {v}")
        return v

    @model_validator(mode="after")
    def _gpu_for_tensorrt(self) -> Target:
        if self.runtime == "tensorrt" and self.kubernetes.gpu_count < 1:
            raise ValueError("a tensorrt target needs kubernetes.gpu_count >= 1")
        return self

    @model_validator(mode="after")
    def _isa_for_cpu(self) -> Target:
        if self.runtime == "onnxruntime" and self.isa is None:
            raise ValueError(
                "an onnxruntime (CPU) target must declare isa: avx2 | avx512_vnni | amx "
                "(its INT8 recipe and where its latency is measured depend on it)"
            )
        if self.runtime == "tensorrt" and self.isa is not None:
            raise ValueError("isa is the instruction set of a CPU target; a tensorrt target runs on its GPU")
        return self

    @property
    def needs_gpu(self) -> bool:
        return self.kubernetes.gpu_count > 0

    @property
    def architecture(self) -> str:
        """The nodes' CPU architecture (``kubernetes.io/arch``; amd64 unless a selector says)."""
        return self.kubernetes.node_selector.get("kubernetes.io/arch", "amd64")


class TargetCatalog(_Strict):
    version: Literal[1]
    precisions: list[Precision] = Field(min_length=1)
    targets: dict[str, Target] = Field(min_length=1)

    @field_validator("targets")
    @classmethod
    def _device_names(cls, v: dict[str, Target]) -> dict[str, Target]:
        for name in v:
            if not _KEY.match(name):
                raise ValueError(f"device name {name!r} must be lowercase letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _precisions_declared(self) -> TargetCatalog:
        for name, target in self.targets.items():
            unknown = sorted(set(target.precisions) - set(self.precisions))
            if unknown:
                raise ValueError(
                    f"targets.{name}.precisions uses {unknown}, not listed in top-level precisions"
                )
        return self

    @property
    def devices(self) -> list[str]:
        return list(self.targets)

    def target(self, device: str) -> Target:
        try:
            return self.targets[device]
        except KeyError:
            raise KeyError(f"unknown device {device!r}; targets.yaml lists {self.devices}") from None

    def supports(self, device: str, precision: str) -> bool:
        return precision in self.target(device).precisions

    def supported_pairs(self) -> list[tuple[str, str]]:
        return [(d, p) for d, t in self.targets.items() for p in self.precisions if p in t.precisions]

    def unsupported_pairs(self) -> list[tuple[str, str]]:
        return [(d, p) for d, t in self.targets.items() for p in self.precisions if p not in t.precisions]

    def support_matrix_markdown(self) -> str:
        """The device x precision grid as a markdown table, for asset descriptions in the UI."""
        head = "| device | runtime | " + " | ".join(self.precisions) + " | p95 budget |"
        sep = "|---|---|" + "---|" * len(self.precisions) + "---|"
        rows = [
            f"| {d} | {t.runtime} | "
            + " | ".join("supported" if p in t.precisions else "**unsupported**" for p in self.precisions)
            + f" | {t.latency_budget_ms.p95:g} ms |"
            for d, t in self.targets.items()
        ]
        return "\n".join([head, sep, *rows])


class UnsupportedTargetError(ValueError):
    """A device x precision combination the catalog does not offer was requested."""


def load_catalog(path: Path | str = TARGETS_FILE) -> TargetCatalog:
    return load_yaml_model(Path(path), TargetCatalog)


def require_supported(catalog: TargetCatalog, device: str, precision: str) -> Target:
    """Return the target, or raise naming the catalog when the combination is not offered."""
    target = catalog.target(device)
    if precision not in target.precisions:
        raise UnsupportedTargetError(
            f"{device}/{precision} is not a supported combination: targets.yaml offers "
            f"{device} only in {target.precisions}; no artifact is built for it"
        )
    return target


__all__ = [
    "ConfigError",
    "Target",
    "TargetCatalog",
    "UnsupportedTargetError",
    "load_catalog",
    "require_supported",
]
