"""The simulation gate: per-category pass criteria and comparisons with production.

Criteria live in ``config/simulation.yaml`` (``gate``): absolute limits per scenario category
(e.g. zero collisions in cut-in and stopped-lead scenes), and comparisons with production on
the same runs and seeds (no increase in near misses, none at all with vulnerable road users,
no higher collision rate, bounded driving-score and comfort regressions). Every check is
reported with both values and its limit; the verdict is green only when all pass.

The checks count events that need persistent perception failures to happen (a collision
needs an object missed for seconds); frame-independent misses are absorbed by the tracker and
the 5 Hz controller, so they alone cannot turn the gate red.

Domain code: no dagster import.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from adas.simulation.config import GateConfig
from adas.simulation.metrics import GroupSummary, RunRecord, summarize, summarize_by_category


class GateCheck(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    scope: str  # a category, or "all"
    passed: bool
    candidate: float | None
    production: float | None
    limit: str
    detail: str = ""


class SimVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    green: bool
    checks: list[GateCheck]
    rationale: str
    candidate: dict[str, GroupSummary]
    production: dict[str, GroupSummary]

    @property
    def status(self) -> str:
        return "green" if self.green else "red"

    @property
    def failed_checks(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


def _check(
    name: str, scope: str, cand: float | None, prod: float | None, limit: str, passed: bool, detail: str = ""
) -> GateCheck:
    return GateCheck(
        name=name, scope=scope, passed=passed, candidate=cand, production=prod, limit=limit, detail=detail
    )


def _failing_runs(records: Sequence[RunRecord], field: str) -> str:
    runs = [r for r in records if getattr(r.metrics, field)]
    parts = []
    for r in runs[:6]:
        s = r.spec
        what = f"{s.actor_type} " if s.actor_type else ""
        with_ = (
            f" with {r.metrics.collision_with}" if field == "collisions" and r.metrics.collision_with else ""
        )
        parts.append(f"{s.run_id} ({what}{s.condition}, {s.ego_speed_mps:g} m/s{with_})")
    more = f" and {len(runs) - 6} more" if len(runs) > 6 else ""
    return ", ".join(parts) + more


def evaluate_gate(
    candidate: Sequence[RunRecord], production: Sequence[RunRecord], cfg: GateConfig
) -> SimVerdict:
    """Green only if every criterion holds; the rationale names each failing check and run."""
    checks: list[GateCheck] = []
    cand_ids = {r.spec.run_id: r.spec for r in candidate}
    prod_ids = {r.spec.run_id: r.spec for r in production}
    same = cand_ids == prod_ids
    checks.append(
        _check(
            "identical_runs",
            "all",
            len(cand_ids),
            len(prod_ids),
            "same run ids, parameters and seeds",
            same,
            "" if same else "candidate and production were not run on the same specs",
        )
    )
    checks.append(
        _check("min_runs", "all", len(candidate), None, f">= {cfg.min_runs}", len(candidate) >= cfg.min_runs)
    )
    c_cat, p_cat = summarize_by_category(candidate), summarize_by_category(production)
    empty = summarize([])
    for cat, crit in cfg.categories.items():
        c_recs = [r for r in candidate if r.spec.category == cat]
        c, p = c_cat.get(cat, empty), p_cat.get(cat, empty)
        if not c_recs:
            continue
        absolute = crit.absolute_conditions
        in_abs = [r for r in c_recs if absolute is None or r.spec.condition in absolute]
        if crit.max_collisions is not None and in_abs:
            n_c = sum(r.metrics.collisions for r in in_abs)
            ids = {r.spec.run_id for r in in_abs}
            n_p = sum(r.metrics.collisions for r in production if r.spec.run_id in ids)
            where = f" in {', '.join(absolute)}" if absolute is not None else ""
            ok = n_c <= crit.max_collisions
            checks.append(
                _check(
                    "collisions",
                    cat,
                    n_c,
                    n_p,
                    f"<= {crit.max_collisions}{where}",
                    ok,
                    "" if ok else f"collided: {_failing_runs(in_abs, 'collisions')}",
                )
            )
        if crit.max_collision_increase is not None:
            # With absolute conditions, the comparison with production covers the other conditions.
            rel = (
                c_recs
                if absolute is None or crit.max_collisions is None
                else [r for r in c_recs if r not in in_abs]
            )
            ids = {r.spec.run_id for r in rel}
            n_c = sum(r.metrics.collisions for r in rel)
            n_p = sum(
                r.metrics.collisions for r in production if r.spec.category == cat and r.spec.run_id in ids
            )
            where = f" outside {', '.join(absolute)}" if rel is not c_recs else ""
            ok = n_c <= n_p + crit.max_collision_increase
            if rel:
                checks.append(
                    _check(
                        "collision_increase",
                        cat,
                        n_c,
                        n_p,
                        f"<= production + {crit.max_collision_increase}{where}",
                        ok,
                        "" if ok else f"collided: {_failing_runs(rel, 'collisions')}",
                    )
                )
        if crit.max_off_road is not None:
            ok = c.off_road <= crit.max_off_road
            checks.append(
                _check(
                    "off_road",
                    cat,
                    c.off_road,
                    p.off_road,
                    f"<= {crit.max_off_road}",
                    ok,
                    "" if ok else f"off road: {_failing_runs(c_recs, 'off_road_events')}",
                )
            )
        if crit.max_blocked is not None:
            ok = c.agent_blocked <= crit.max_blocked
            checks.append(
                _check("agent_blocked", cat, c.agent_blocked, p.agent_blocked, f"<= {crit.max_blocked}", ok)
            )
        if crit.max_near_miss_increase is not None:
            ok = c.near_misses <= p.near_misses + crit.max_near_miss_increase
            checks.append(
                _check(
                    "near_miss_increase",
                    cat,
                    c.near_misses,
                    p.near_misses,
                    f"<= production + {crit.max_near_miss_increase}",
                    ok,
                )
            )
        if crit.max_driving_score_drop is not None:
            ok = c.mean_driving_score >= p.mean_driving_score - crit.max_driving_score_drop
            checks.append(
                _check(
                    "driving_score_drop",
                    cat,
                    c.mean_driving_score,
                    p.mean_driving_score,
                    f">= production - {crit.max_driving_score_drop}",
                    ok,
                )
            )
    c_all, p_all = summarize(candidate), summarize(production)
    ok = c_all.near_misses <= p_all.near_misses + cfg.max_near_miss_increase
    checks.append(
        _check(
            "near_miss_increase",
            "all",
            c_all.near_misses,
            p_all.near_misses,
            f"<= production + {cfg.max_near_miss_increase}",
            ok,
            "" if ok else f"near misses: {_failing_runs(candidate, 'near_misses')}",
        )
    )
    ok = c_all.vru_near_misses <= p_all.vru_near_misses + cfg.max_vru_near_miss_increase
    checks.append(
        _check(
            "vru_near_miss_increase",
            "all",
            c_all.vru_near_misses,
            p_all.vru_near_misses,
            f"<= production + {cfg.max_vru_near_miss_increase}",
            ok,
        )
    )
    ok = (
        c_all.collisions_per_1000km
        <= p_all.collisions_per_1000km + cfg.max_collision_rate_increase_per_1000km
    )
    checks.append(
        _check(
            "collisions_per_1000km",
            "all",
            c_all.collisions_per_1000km,
            p_all.collisions_per_1000km,
            f"<= production + {cfg.max_collision_rate_increase_per_1000km:g}",
            ok,
        )
    )
    ok = c_all.mean_driving_score >= p_all.mean_driving_score - cfg.max_driving_score_drop
    checks.append(
        _check(
            "driving_score_drop",
            "all",
            c_all.mean_driving_score,
            p_all.mean_driving_score,
            f">= production - {cfg.max_driving_score_drop:g}",
            ok,
        )
    )
    # Comfort: bounded regression of the p95 jerk (a small absolute floor keeps near-zero ratios sane).
    bound = p_all.p95_abs_jerk_mps3 * (1 + cfg.max_p95_jerk_increase_pct / 100.0) + 0.5
    ok = c_all.p95_abs_jerk_mps3 <= bound
    checks.append(
        _check(
            "comfort_p95_jerk",
            "all",
            c_all.p95_abs_jerk_mps3,
            p_all.p95_abs_jerk_mps3,
            f"<= production x {1 + cfg.max_p95_jerk_increase_pct / 100:g} + 0.5 m/s³",
            ok,
        )
    )
    green = all(c.passed for c in checks)
    return SimVerdict(
        green=green,
        checks=checks,
        rationale=rationale_markdown(green, checks, c_all, p_all, _collision_notes(candidate, production)),
        candidate={**c_cat, "all": c_all},
        production={**p_cat, "all": p_all},
    )


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def _collision_notes(candidate: Sequence[RunRecord], production: Sequence[RunRecord]) -> list[str]:
    """Every candidate collision, and whether production collided on the same run."""
    prod = {r.spec.run_id: r for r in production}
    notes = []
    for r in candidate:
        if not r.metrics.collisions:
            continue
        s = r.spec
        p = prod.get(s.run_id)
        shared = "production collided too" if p is not None and p.metrics.collisions else "production did not"
        notes.append(
            f"{s.run_id}: {s.category}, {s.actor_type or 'traffic'}, {s.condition} severity {s.severity}, "
            f"{s.ego_speed_mps:g} m/s: {r.metrics.collision_kind} collision with a {r.metrics.collision_with} "
            f"({shared})"
        )
    return notes


def rationale_markdown(
    green: bool, checks: Sequence[GateCheck], c: GroupSummary, p: GroupSummary, notes: Sequence[str] = ()
) -> str:
    failed = [ch for ch in checks if not ch.passed]
    head = (
        f"**Sim gate GREEN**: all {len(checks)} checks pass on {c.runs} runs ({c.km:.1f} km) with the same seeds as production."
        if green
        else f"**Sim gate RED**: {len(failed)} of {len(checks)} checks fail."
    )
    lines = [head, ""]
    for ch in failed:
        lines.append(
            f"- `{ch.scope}` **{ch.name}**: candidate {_fmt(ch.candidate)} vs production {_fmt(ch.production)} "
            f"(limit {ch.limit}){'. ' + ch.detail if ch.detail else ''}"
        )
    if notes:
        lines += ["", "Candidate collisions (see the clips):", *[f"- {n}" for n in notes]]
    lines += [
        "",
        "| check | scope | candidate | production | limit | result |",
        "|---|---|---|---|---|---|",
    ]
    for ch in checks:
        lines.append(
            f"| {ch.name} | {ch.scope} | {_fmt(ch.candidate)} | {_fmt(ch.production)} | {ch.limit} | "
            f"{'pass' if ch.passed else '**FAIL**'} |"
        )
    return "\n".join(lines)
