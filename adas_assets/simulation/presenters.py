"""Simulation results -> Dagster metadata a person reads in the UI (markdown, tables, embedded images).

One presenter per asset (and one for the blocking check): each takes the typed result of the
core use-case and returns the ``MaterializeResult`` / ``AssetCheckResult`` with the metadata keys
the UI and the tests read.
"""

import base64
from typing import Any

import dagster as dg

from adas.simulation.closed_loop_simulation import ClosedLoopResult
from adas.simulation.metrics import GroupSummary, RunRecord
from adas.simulation.refs import SimVerdictRef
from adas.simulation.replay_metrics import ReplayMetricsResult
from adas.simulation.replay_report import ReplayReport
from adas.simulation.scenario_library import ScenarioLibraryResult
from adas.simulation.scenario_templates import describe
from adas.simulation.sim_verdict import SimVerdictResult
from adas_assets.metadata import table

REPLAY_TOTALS = (
    "recall",
    "precision",
    "fp_per_frame",
    "mean_ttfd_s",
    "never_detected",
    "fragmentations",
    "id_switches",
    "ghost_tracks",
)
TTFD_TYPES = {
    "class": "string",
    "objects": "int",
    "never_detected_cand": "int",
    "never_detected_prod": "int",
    "mean_ttfd_s_cand": "float",
    "mean_ttfd_s_prod": "float",
}
FLAGGED_TYPES = {
    "segment": "string",
    "condition": "string",
    "recall_cand": "float",
    "recall_prod": "float",
    "why": "string",
}
SCENARIO_TYPES = {
    "scenario": "string",
    "from": "string",
    "category": "string",
    "key_actor": "string",
    "actors": "int",
    "duration_s": "float",
    "sweep_runs": "int",
    "why": "string",
    "executable": "string",  # "yes", or "no: <reason>" (elements outside the player's subset, by XML path)
}
SUMMARY_TYPES = {
    "category": "string",
    "model": "string",
    "runs": "int",
    "km": "float",
    "collisions": "int",
    "collisions_per_1000km": "float",
    "near_misses": "int",
    "vru_near_misses": "int",
    "off_road": "int",
    "min_ttc_s": "float",
    "driving_score": "float",
    "route_completion": "float",
    "p95_jerk": "float",
}
FAILURE_TYPES = {
    "model": "string",
    "run": "string",
    "category": "string",
    "condition": "string",
    "actor": "string",
    "what": "string",
    "clip": "string",
}
CHECK_TYPES = {
    "check": "string",
    "scope": "string",
    "status": "string",
    "candidate": "float",
    "production": "float",
    "interval": "string",
    "limit": "string",
    "runs_to_decide": "int",
    "passed": "bool",
}
# Failure clips of the candidate embedded in the metadata (the rest are linked in `failures`).
EMBEDDED_CLIPS = 2


def num(v: Any) -> float:
    """A metadata float: ``None`` (not measured) as NaN."""
    return float("nan") if v is None else float(v)


# --------------------------------------------------------------------------- replay


def replay_totals_rows(result: ReplayMetricsResult) -> list[dict[str, Any]]:
    cand, prod = result.ref.candidate, result.ref.production
    return [{"metric": k, "candidate": num(cand[k]), "production": num(prod[k])} for k in REPLAY_TOTALS]


def ttfd_rows(report: ReplayReport) -> list[dict[str, Any]]:
    """Time to first detection per class, candidate beside production."""
    pc, pp = report.candidate.per_class_ttfd(), report.production.per_class_ttfd()
    rows = []
    for cls in sorted(set(pc) | set(pp)):
        c, p = pc.get(cls, {}), pp.get(cls, {})
        rows.append(
            {
                "class": cls,
                "objects": c.get("objects", 0),
                "never_detected_cand": c.get("never_detected", 0),
                "never_detected_prod": p.get("never_detected", 0),
                "mean_ttfd_s_cand": num(c.get("mean_ttfd_s")),
                "mean_ttfd_s_prod": num(p.get("mean_ttfd_s")),
            }
        )
    return rows


def flagged_rows(report: ReplayReport) -> list[dict[str, Any]]:
    return [
        {
            "segment": f.segment_id,
            "condition": f"{f.weather}/{f.lighting}",
            "recall_cand": num(f.candidate_recall),
            "recall_prod": num(f.production_recall),
            "why": "; ".join(f.reasons),
        }
        for f in report.flagged
    ]


def replay_metrics_output(result: ReplayMetricsResult) -> dg.MaterializeResult:
    ref, report = result.ref, result.report
    seq_rows = report.sequence_table()
    seq_types = {
        k: ("string" if k in ("sequence", "condition") else "float")
        for k in (seq_rows[0] if seq_rows else {})
    }
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "summary": dg.MetadataValue.md(
                f"### Replay of {len(report.candidate.sequences)} sequences ({ref.candidate['frames']} frames): "
                f"candidate {ref.version} vs production {ref.production_version}\n\n"
                f"{ref.flagged} segment(s) flagged for review (divergence from production, or the candidate's worst)."
            ),
            "totals": table(
                replay_totals_rows(result), {"metric": "string", "candidate": "float", "production": "float"}
            ),
            "sequences": table(seq_rows, seq_types),
            "time_to_first_detection": table(ttfd_rows(report), TTFD_TYPES),
            "flagged_segments": table(flagged_rows(report), FLAGGED_TYPES),
            "flagged": ref.flagged,
            "replay_report": dg.MetadataValue.url(ref.files["replay_report.json"].uri),
        },
    )


# --------------------------------------------------------------------------- scenario library


def scenario_library_output(result: ScenarioLibraryResult) -> dg.MaterializeResult:
    ref = result.ref
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "scenarios": table([describe(t) for t in result.templates], SCENARIO_TYPES),
            "scenario_count": len(result.templates),
            "concrete_runs": len(result.runs),
            "schema": dg.MetadataValue.text(
                "OpenSCENARIO 1.3 (asam-qc-openscenarioxml XSD), OpenDRIVE 1.7 core XSD"
            ),
            "library": dg.MetadataValue.url(result.library_uri),
            "index": dg.MetadataValue.url(ref.index.uri),
        },
    )


# --------------------------------------------------------------------------- closed loop


def summary_rows(
    candidate: dict[str, GroupSummary], production: dict[str, GroupSummary]
) -> list[dict[str, Any]]:
    """One row per category (and ``all``) and model, in the candidate's category order."""
    rows = []
    for cat in candidate:
        for model, s in (("candidate", candidate[cat]), ("production", production.get(cat))):
            if s is None:
                continue
            rows.append(
                {
                    "category": cat,
                    "model": model,
                    "runs": s.runs,
                    "km": s.km,
                    "collisions": s.collisions,
                    "collisions_per_1000km": s.collisions_per_1000km,
                    "near_misses": s.near_misses,
                    "vru_near_misses": s.vru_near_misses,
                    "off_road": s.off_road,
                    "min_ttc_s": num(s.min_ttc_s),
                    "driving_score": s.mean_driving_score,
                    "route_completion": s.mean_route_completion,
                    "p95_jerk": s.p95_abs_jerk_mps3,
                }
            )
    return rows


def failure_what(r: RunRecord) -> str:
    """What went wrong in a failed run, in a few words."""
    if r.metrics.collisions:
        return f"collision ({r.metrics.collision_kind}) with {r.metrics.collision_with}"
    return "off road" if r.metrics.off_road_events else "blocked"


def failure_rows(result: ClosedLoopResult) -> list[dict[str, Any]]:
    """Every failed run of either model, with a link to its clip when it has one."""
    clips = result.ref.clips
    return [
        {
            "model": r.model,
            "run": r.spec.run_id,
            "category": r.spec.category,
            "condition": r.spec.condition,
            "actor": r.spec.actor_type or "",
            "what": failure_what(r),
            "clip": clips[f"{r.model}/{r.spec.run_id}"].uri if f"{r.model}/{r.spec.run_id}" in clips else "",
        }
        for r in result.records
        if r.metrics.failed
    ]


def gif_markdown(title: str, thumb: bytes, uri: str) -> str:
    return f"**{title}** ([full clip]({uri}))\n\n![{title}](data:image/gif;base64,{base64.b64encode(thumb).decode()})"


def failure_clips_markdown(result: ClosedLoopResult, failures: list[dict[str, Any]]) -> str | None:
    """The first candidate failures that have a thumbnail, embedded; None when there are none."""
    thumbs, clips = result.thumbnails, result.ref.clips
    shown = [f for f in failures if f["model"] == "candidate" and f"candidate/{f['run']}" in thumbs]
    if not shown:
        return None
    return "\n\n".join(
        gif_markdown(
            f"{f['run']}: {f['what']} ({f['condition']})",
            thumbs[f"candidate/{f['run']}"],
            clips[f"candidate/{f['run']}"].uri,
        )
        for f in shown[:EMBEDDED_CLIPS]
    )


def closed_loop_output(result: ClosedLoopResult) -> dg.MaterializeResult:
    ref = result.ref
    failures = failure_rows(result)
    png = base64.b64encode(result.heatmap_png).decode()
    metadata: dict[str, Any] = {
        "summary": table(summary_rows(ref.candidate, ref.production), SUMMARY_TYPES),
        "violations_heatmap": dg.MetadataValue.md(
            f"[violations_heatmap.png]({ref.files['violations_heatmap.png'].uri})\n\n"
            f"![violations](data:image/png;base64,{png})"
        ),
        "failures": table(failures, FAILURE_TYPES),
        "candidate_collisions": ref.candidate["all"].collisions,
        "production_collisions": ref.production["all"].collisions,
        "candidate_driving_score": ref.candidate["all"].mean_driving_score,
        "production_driving_score": ref.production["all"].mean_driving_score,
        "runs_per_model": len(result.runs),
        "library_runs": sum(1 for r in result.runs if r.source.startswith("library:")),
        "shards": dg.MetadataValue.text(
            f"{ref.shards_computed} computed, {ref.shards_reused} reused from checkpoints "
            f"({result.episodes_computed} episodes, {result.compute_s:.0f} s of worker time)"
        ),
        "sim_summary": dg.MetadataValue.url(ref.files["sim_summary.parquet"].uri),
        "location": dg.MetadataValue.url(result.location_uri),
    }
    seq = ref.sequential
    if seq is not None:
        metadata["sequential"] = dg.MetadataValue.md(seq.describe())
        metadata["sequential_added_runs"] = seq.added_runs
    clips_md = failure_clips_markdown(result, failures)
    if clips_md is not None:
        metadata["failure_clips"] = dg.MetadataValue.md(clips_md)
    return dg.MaterializeResult(value=ref, metadata=metadata)


# --------------------------------------------------------------------------- sim gate


def _checks_text(ref: SimVerdictRef, status: str) -> dg.TextMetadataValue:
    return dg.MetadataValue.text(
        ", ".join(f"{c.scope}:{c.name}" for c in ref.checks if c.status == status) or "none"
    )


def _runs_text(ref: SimVerdictRef) -> dg.TextMetadataValue:
    seq = ref.sequential
    if seq is None:
        return dg.MetadataValue.text(f"{ref.runs if ref.runs is not None else '?'} paired runs (one look)")
    return dg.MetadataValue.text(
        f"{seq.runs} paired runs: {seq.planned_runs} planned + {seq.added_runs} added sequentially in "
        f"{len(seq.looks) - 1} batch(es) (max {seq.max_runs}, {seq.wall_s:.0f} s); stopped: {seq.stopped}"
    )


def sim_verdict_output(result: SimVerdictResult) -> dg.MaterializeResult:
    ref = result.ref
    rows = [
        {
            "check": c.name,
            "scope": c.scope,
            "status": c.status,
            "candidate": num(c.candidate),
            "production": num(c.production),
            "interval": c.interval or "",
            "limit": c.limit,
            "runs_to_decide": c.n_to_decide,
            "passed": c.passed,
        }
        for c in ref.checks
    ]
    return dg.MaterializeResult(
        value=ref,
        metadata={
            "verdict": ref.status,
            "green": ref.green,
            "rationale": dg.MetadataValue.md(ref.rationale),
            "failed_checks": _checks_text(ref, "fail"),
            "amber_checks": _checks_text(ref, "amber"),
            "runs": _runs_text(ref),
            "checks": table(rows, CHECK_TYPES),
            "verdict_json": dg.MetadataValue.url(ref.files["sim_verdict.json"].uri),
        },
    )


def sim_gate_check_output(ref: SimVerdictRef) -> dg.AssetCheckResult:
    """Passes on green only. Red fails with ERROR: promotion downstream does not run. Amber
    (insufficient evidence) fails with WARN: the entry may be registered and staged with its amber
    verdict, and governance keeps it out of production until a verdict is green."""
    return dg.AssetCheckResult(
        passed=ref.green,
        severity=dg.AssetCheckSeverity.WARN if ref.verdict == "amber" else dg.AssetCheckSeverity.ERROR,
        description=ref.rationale.split("\n", 1)[0],
        metadata={
            "verdict": ref.status,
            "failed_checks": _checks_text(ref, "fail"),
            "amber_checks": _checks_text(ref, "amber"),
            "runs": _runs_text(ref),
            "verdict_json": dg.MetadataValue.url(ref.files["sim_verdict.json"].uri),
        },
    )
