"""The sim gate's intervals and three-valued verdicts: paired rate comparisons on shared seeds,
bootstrap intervals of per-run differences, absolute checks, rationale, stored refs."""

from __future__ import annotations

import re

import pytest
import yaml

from adas.config_errors import ConfigError
from adas.simulation.config import SIMULATION_FILE, SimulationConfig, load_simulation_config
from adas.simulation.gate import GateCheck, evaluate_gate, paired_rate_runs_to_decide
from adas.simulation.metrics import RunRecord
from adas.simulation.refs import SimVerdictRef
from adas.stats import paired_binary
from tests.simulation.test_metrics_gate import _record

INTERVAL = r"[+-]\d+\.\d+( pp| s)? \[[+-]\d+\.\d+, [+-]\d+\.\d+\] \(n = \d+\)"


def _pairs(n: int, candidate_collides: int, production_collides: int = 0, category: str = "cruise"):  # type: ignore[no-untyped-def]
    """``n`` runs on shared run ids (shared seeds); the first runs collide for each model."""
    cand = [_record("candidate", f"{category}-{i:03d}", category, i < candidate_collides) for i in range(n)]
    prod = [_record("production", f"{category}-{i:03d}", category, i < production_collides) for i in range(n)]
    return cand, prod


def _check(verdict, name: str, scope: str = "all") -> GateCheck:  # type: ignore[no-untyped-def]
    (check,) = [c for c in verdict.checks if c.name == name and c.scope == scope]
    return check


def test_3_of_30_against_0_of_30_is_insufficient_evidence(sim_cfg: SimulationConfig) -> None:
    cand, prod = _pairs(30, candidate_collides=3)
    v = evaluate_gate(cand, prod, sim_cfg.gate)
    rate = _check(v, "collision_rate_increase")
    # Newcombe: +10 points [-3.1, +25.6]: straddles the 5-point tolerance. Exact McNemar on the 3
    # discordant runs: p = 2 x 0.5^3 = 0.25.
    assert rate.status == "amber" and not rate.passed
    assert rate.interval == "+10.0 pp [-3.1, +25.6] (n = 30)"
    assert "exact McNemar p = 0.25 on 3 discordant runs" in rate.detail
    assert rate.n_to_decide == 126  # the observed rates held, 126 runs would show the regression
    assert v.verdict == "amber" and not v.green and not v.failed_checks
    assert "insufficient evidence" in v.rationale and "about 126 runs would decide it" in v.rationale
    assert "cruise-000" in v.rationale  # the runs only the candidate collided on are named


def test_30_of_300_against_0_of_300_is_red(sim_cfg: SimulationConfig) -> None:
    cand, prod = _pairs(300, candidate_collides=30)
    v = evaluate_gate(cand, prod, sim_cfg.gate)
    rate = _check(v, "collision_rate_increase")
    assert rate.status == "fail" and rate.interval == "+10.0 pp [+6.8, +13.9] (n = 300)"
    assert v.verdict == "red" and ("all", "collision_rate_increase") in {
        (c.scope, c.name) for c in v.failed_checks
    }
    # The category guard fails too: the whole interval of cruise alone is above +5 points.
    assert _check(v, "collision_rate_increase", "cruise").status == "fail"


def test_shared_collisions_are_no_evidence_against_the_candidate(sim_cfg: SimulationConfig) -> None:
    # Both models collide on the same 3 of 30 runs: no discordant run, the difference is 0 and its
    # interval is not of zero width (Newcombe's continuity-corrected phi).
    cand, prod = _pairs(30, candidate_collides=3, production_collides=3)
    rate = _check(evaluate_gate(cand, prod, sim_cfg.gate), "collision_rate_increase")
    assert rate.status == "amber" and rate.interval is not None
    assert (
        rate.interval.startswith("+0.0 pp [-") and "exact McNemar p = 1 on 0 discordant runs" in rate.detail
    )


def test_runs_to_decide_a_rate_scale_the_observed_table() -> None:
    # 0/n vs 0/n: the interval is +/- the Wilson bound z^2 / (n + z^2) <= 0.05 from n = 73 on.
    assert paired_rate_runs_to_decide(paired_binary([False] * 24, [False] * 24), 0.05) == 73
    # A difference sitting on the tolerance is never decided.
    assert paired_rate_runs_to_decide(paired_binary([True] + [False] * 19, [False] * 20), 0.05) is None


def test_an_ncap_collision_is_red_on_any_sample_and_reports_its_rate_interval(
    sim_cfg: SimulationConfig,
) -> None:
    prod = [_record("production", f"cut_in-{i:03d}", "cut_in", False, weather="clear") for i in range(5)]
    cand = [_record("candidate", f"cut_in-{i:03d}", "cut_in", i == 2, weather="clear") for i in range(5)]
    v = evaluate_gate(cand, prod, sim_cfg.gate)
    ncap = _check(v, "collisions", "cut_in")
    assert ncap.status == "fail" and v.verdict == "red"
    # Clopper-Pearson of 1/5: [0.5 %, 71.6 %].
    assert ncap.interval == "+20.0% [+0.5, +71.6] (n = 5)" and "cut_in-002" in ncap.detail


def test_min_ttc_differences_are_paired_and_capped(sim_cfg: SimulationConfig) -> None:
    def with_ttc(r: RunRecord, ttc: float | None) -> RunRecord:
        return r.model_copy(update={"metrics": r.metrics.model_copy(update={"min_ttc_s": ttc})})

    cand, prod = _pairs(40, candidate_collides=0)
    prod = [with_ttc(r, 2.0 + (i % 5) * 0.3) for i, r in enumerate(prod)]
    same = [with_ttc(c, p.metrics.min_ttc_s) for c, p in zip(cand, prod, strict=True)]
    check = _check(evaluate_gate(same, prod, sim_cfg.gate), "min_ttc_drop")
    assert check.status == "pass" and check.interval == "+0.00 s [+0.00, +0.00] (n = 40)"
    # One second less on every run: the whole interval of the median is below -0.25 s.
    closer = [with_ttc(c, p.metrics.min_ttc_s - 1.0) for c, p in zip(cand, prod, strict=True)]
    check = _check(evaluate_gate(closer, prod, sim_cfg.gate), "min_ttc_drop")
    assert check.status == "fail" and check.interval == "-1.00 s [-1.00, -1.00] (n = 40)"
    assert "quantiles 5/25/50/75/95 %" in check.detail
    # Beyond the 6 s cap nothing is closing in: 20 s vs 9 s is no drop. Undefined runs are left out.
    far_c = [with_ttc(c, 9.0 if i < 30 else None) for i, c in enumerate(cand)]
    far_p = [with_ttc(p, 20.0) for p in prod]
    check = _check(evaluate_gate(far_c, far_p, sim_cfg.gate), "min_ttc_drop")
    assert check.status == "pass" and check.interval == "+0.00 s [+0.00, +0.00] (n = 30)"


def test_driving_score_drop_is_a_bootstrap_interval_of_paired_differences(sim_cfg: SimulationConfig) -> None:
    def scored(r: RunRecord, score: float) -> RunRecord:
        return r.model_copy(update={"metrics": r.metrics.model_copy(update={"driving_score": score})})

    cand, prod = _pairs(40, candidate_collides=0)
    prod = [scored(r, 0.9) for r in prod]
    worse = [scored(r, 0.9 - (0.2 if i % 2 else 0.0)) for i, r in enumerate(cand)]  # -0.10 on average
    check = _check(evaluate_gate(worse, prod, sim_cfg.gate), "driving_score_drop")
    assert check.status == "fail" and check.candidate == pytest.approx(0.8)
    assert re.fullmatch(INTERVAL, check.interval or "")
    slightly = [scored(r, 0.9 - (0.2 if i % 5 == 0 else 0.0)) for i, r in enumerate(cand)]  # -0.04
    check = _check(evaluate_gate(slightly, prod, sim_cfg.gate), "driving_score_drop")
    assert check.status == "amber" and check.n_to_decide is not None and check.n_to_decide > 40


def test_the_rationale_gives_every_delta_as_an_interval(sim_cfg: SimulationConfig) -> None:
    cand, prod = _pairs(30, candidate_collides=3)
    v = evaluate_gate(cand, prod, sim_cfg.gate)
    lines = v.rationale.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("| check |"))) :]
    table = table[: table.index("")] if "" in table else table  # the checks table (the scenarios' follows)
    rows = [line for line in table if "---" not in line][1:]
    assert len(rows) == len(v.checks)
    for row, check in zip(rows, v.checks, strict=True):
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 7, row  # no stray "|" splits a cell
        if check.status != "skipped" and check.name not in ("identical_runs", "min_runs"):
            assert re.fullmatch(INTERVAL.replace(r"( pp| s)?", r"( pp| s| m/s³|%)?"), cells[4]), row
    assert re.search(r"collision rate difference \+10\.0 pp \[-3\.1, \+25\.6\] \(n = 30\)", v.rationale)


def test_stored_refs_from_before_the_three_valued_gate_still_load() -> None:
    old_check = {
        "name": "collisions",
        "scope": "cut_in",
        "passed": False,
        "candidate": 1.0,
        "production": 0.0,
        "limit": "<= 0",
    }
    check = GateCheck.model_validate(old_check)
    assert check.status == "fail" and check.interval is None and check.n_to_decide is None
    ref = SimVerdictRef.model_validate(
        {
            "device": "x86-cpu",
            "precision": "fp32",
            "version": "1.0.0",
            "production_version": "0.9.0",
            "green": False,
            "rationale": "**Sim gate RED**",
            "checks": [old_check],
            "files": {},
        }
    )
    assert ref.verdict == "red" and ref.status == "red" and ref.runs is None and ref.sequential is None
    with pytest.raises(ValueError, match="contradicts"):
        GateCheck.model_validate({**old_check, "status": "pass"})
    with pytest.raises(ValueError, match="contradicts"):
        SimVerdictRef.model_validate({**ref.model_dump(), "verdict": "amber", "green": True})


def test_the_old_count_limits_are_refused_with_the_field_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    raw = yaml.safe_load(SIMULATION_FILE.read_text())
    raw["gate"]["categories"]["cruise"]["max_collision_increase"] = 0
    raw["sweeps"]["demo"]["sequential"]["max_runs"] = 10
    bad = tmp_path / "simulation.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as err:
        load_simulation_config(bad)
    msg = str(err.value)
    assert "gate.categories.cruise.max_collision_increase" in msg
    assert "sweeps.demo: sequential.max_runs (10) must exceed the sweep's 24 runs" in msg
