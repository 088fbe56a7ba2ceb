"""Latency is measured only on a host that has the target's instruction set (issue #16 item 1).

Elsewhere it is "not measured: host lacks avx512_vnni": the packaging check does not pass, the
evaluation measures nothing, and the latency gate is not a pass.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from adas import cpu_isa
from adas.catalog import load_catalog
from adas.cpu_isa import cpu_flags, isa_of, missing_isa
from adas.evaluation.cell_evaluation import engine_latency
from adas.evaluation.gates import Latency, MetricsSnapshot, evaluate_gates
from adas.packaging.quality import EngineQuality, latency_on_this_host
from adas_assets.packaging.checks import latency_within_budget

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma"})
SAPPHIRE_RAPIDS = AVX2_ONLY | {"avx512f", "avx512_vnni", "amx_tile", "amx_int8", "amx_bf16"}


@pytest.fixture
def avx2_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu_isa, "host_cpu_flags", lambda: AVX2_ONLY)


def test_the_host_level_comes_from_the_cpuinfo_flags() -> None:
    text = "processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f avx512_vnni\n\nprocessor\t: 1\n"
    assert cpu_flags(text) == {"fpu", "sse", "avx", "avx2", "avx512f", "avx512_vnni"}
    assert isa_of(cpu_flags(text)) == "avx512_vnni"
    assert isa_of(SAPPHIRE_RAPIDS) == "amx"
    assert isa_of(AVX2_ONLY) == "avx2"
    assert isa_of(frozenset({"neon"})) is None
    assert missing_isa("avx512_vnni", AVX2_ONLY) == "host lacks avx512_vnni"
    assert missing_isa("avx512_vnni", SAPPHIRE_RAPIDS) is None
    assert missing_isa("amx", AVX2_ONLY) == "host lacks amx_int8, amx_tile, avx512_vnni"
    assert missing_isa(None, frozenset()) is None  # a GPU target declares no CPU level


def test_packaging_does_not_measure_latency_on_a_host_without_the_target_isa(avx2_host: None) -> None:
    def measure() -> Any:
        raise AssertionError("measured on a host without the target's instruction set")

    report, reason, body = latency_on_this_host(measure, "avx512_vnni")
    assert report is None
    assert reason == "not measured: host lacks avx512_vnni"
    assert body == {"not_measured": reason, "builder_isa": "avx2", "target_isa": "avx512_vnni"}


def test_not_measured_latency_never_passes_the_packaging_check(avx2_host: None) -> None:
    quality = EngineQuality(
        equivalence=None,  # type: ignore[arg-type]
        map_drop=None,
        map_failure=None,
        latency=None,
        budget_ms=25.0,
        equivalence_file=None,  # type: ignore[arg-type]
        latency_file=None,  # type: ignore[arg-type]
        latency_not_measured="not measured: host lacks avx512_vnni",
    )
    assert quality.within_budget is False
    assert quality.latency_summary == {
        "not_measured": "not measured: host lacks avx512_vnni",
        "budget_p95_ms": 25.0,
    }
    check = latency_within_budget(quality, "x86-cpu-vnni")
    assert check.passed is False
    assert "not measured: host lacks avx512_vnni" in str(check.description)


class _NeverRun:
    def run(self, x: Any, source_hw: Any = None) -> Any:
        raise AssertionError("the engine was timed on a host without the target's instruction set")


def test_evaluation_reports_not_measured_instead_of_timing_the_engine(avx2_host: None) -> None:
    ref = SimpleNamespace(build={}, contract=None)
    latency = engine_latency(ref, _NeverRun(), load_catalog().target("x86-cpu-vnni"))  # type: ignore[arg-type]
    assert latency.p95_ms is None
    assert latency.not_measured == "not measured: host lacks avx512_vnni"
    assert latency.budget_p95_ms == 25.0


def _gate(latency: Latency) -> tuple[str, str, str]:
    candidate = MetricsSnapshot(version="2.0.0", AP=0.5, per_class_AP={}, slices={})
    verdict = evaluate_gates(candidate, None, latency, 25.0)
    gate = next(g for g in verdict.gates if g.name == "latency")
    return verdict.verdict, gate.status, gate.observed


def test_the_latency_gate_is_not_a_pass_when_latency_was_not_measured() -> None:
    reason = "not measured: host lacks avx512_vnni"
    verdict, status, observed = _gate(
        Latency(p95_ms=None, source=reason, budget_p95_ms=25.0, not_measured=reason)
    )
    assert (status, observed) == ("amber", reason)
    assert verdict != "green"
    # The same gate passes a measured p95 within the budget.
    assert _gate(Latency(p95_ms=10.0, source="packaging microbenchmark", budget_p95_ms=25.0))[1] == "pass"
