"""The packaging checks of each target cell: declared with their asset, evaluated with its build.

Numerical equivalence and latency run while the engine is built (they need the engine in
hand), the contract smoke test while the Triton repository is served; each asset returns its
checks' results beside its materialization.
"""

import dagster as dg

from adas.packaging.contract_smoke import ContractSmokeReport
from adas.packaging.quality import EngineQuality
from adas_assets.partitions import per_target_check

ENGINE_CHECKS = [
    per_target_check(
        "numerical_equivalence",
        asset="engine",
        blocking=True,
        description="Engine vs FP32 PyTorch: per-head errors, decoded boxes, INT8 mAP drop",
    ),
    per_target_check(
        "latency_within_budget",
        asset="engine",
        description="p95 latency at batch 1 within the target's budget (targets.yaml)",
    ),
]

TRITON_CHECKS = [
    per_target_check(
        "triton_contract_smoke",
        asset="triton_model_repository",
        blocking=True,
        description="A real Triton server answers raw frames with the engine's own detections (HTTP and gRPC)",
    )
]


def numerical_equivalence(qa: EngineQuality) -> dg.AssetCheckResult:
    eq = qa.equivalence
    failures = [*eq.failures, *([qa.map_failure] if qa.map_failure else [])]
    return dg.AssetCheckResult(
        check_name="numerical_equivalence",
        passed=eq.passed and not qa.map_failure,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(failures)
        or "every head, the decoded boxes and the task metric within tolerance",
        metadata={
            "report": dg.MetadataValue.md(eq.markdown()),
            "random_inputs": eq.random_inputs,
            "real_frames": eq.real_frames,
            **({"map_drop_points": qa.map_drop} if qa.map_drop is not None else {}),
        },
    )


def latency_within_budget(qa: EngineQuality, device: str) -> dg.AssetCheckResult:
    if qa.latency is None:  # a host without the target's instruction set measures nothing
        return dg.AssetCheckResult(
            check_name="latency_within_budget",
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            description=f"{qa.latency_not_measured}; budget p95 {qa.budget_ms:g} ms ({device}): "
            "measure on a node with the target's instruction set",
            metadata={"not_measured": str(qa.latency_not_measured)},
        )
    contended = (
        f"; {qa.latency.contended} (after {qa.latency.attempts} measurements)" if qa.latency.contended else ""
    )
    return dg.AssetCheckResult(
        check_name="latency_within_budget",
        passed=qa.within_budget,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"p95 at batch 1: {qa.p95_ms:.2f} ms, budget {qa.budget_ms:g} ms ({device}){contended}",
        metadata={
            "latency": dg.MetadataValue.md(qa.latency.markdown()),
            "p50_ms": qa.latency.batch(1).p50_ms,
            "p95_ms": qa.latency.batch(1).p95_ms,
            "best_batch": qa.latency.best_batch,
            "best_throughput_fps": qa.latency.best_throughput_fps,
            "peak_rss_mib": qa.latency.peak_rss_mib,
            "attempts": qa.latency.attempts,
            **({"contended": qa.latency.contended} if qa.latency.contended else {}),
        },
    )


def triton_contract_smoke(smoke: ContractSmokeReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name="triton_contract_smoke",
        passed=smoke.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        # The failed checks as "name: detail" (joining the SmokeCheck records raised TypeError).
        description="; ".join(f"{c.name}: {c.detail}" for c in smoke.failures)
        or "metadata, value ranges and detections match over HTTP and gRPC",
        metadata={
            "report": dg.MetadataValue.md(smoke.to_markdown()),
            "server_start_s": round(smoke.startup_seconds or 0.0, 2),
        },
    )
