"""Simulation presenters: typed use-case results -> the metadata tables and markdown the UI shows."""

from __future__ import annotations

import math

import dagster as dg
import numpy as np
import pytest

from adas.intake.refs import StoredFile
from adas.simulation.closed_loop_simulation import ClosedLoopResult
from adas.simulation.config import ReplayConfig
from adas.simulation.gate import GateCheck
from adas.simulation.metrics import RunRecord, summarize, summarize_by_category
from adas.simulation.refs import SimulationRef, SimVerdictRef
from adas.simulation.replay import replay
from adas.simulation.sim_verdict import SimVerdictResult
from adas.simulation.sweep import SweepResult
from adas_assets.simulation.presenters import (
    closed_loop_output,
    failure_clips_markdown,
    failure_rows,
    failure_what,
    flagged_rows,
    num,
    sim_gate_check_output,
    sim_verdict_output,
    summary_rows,
    ttfd_rows,
)
from tests.simulation.test_metrics_gate import _record
from tests.simulation.test_replay import PX_PER_M, TRACKS, _coco, _dets


def _file(name: str) -> StoredFile:
    return StoredFile(key=name, uri=f"file:///store/{name}", sha256="0" * 64, size=1)


def _off_road(r: RunRecord) -> RunRecord:
    return r.model_copy(update={"metrics": r.metrics.model_copy(update={"off_road_events": 1})})


def _closed_loop(thumbs: set[str]) -> ClosedLoopResult:
    """Candidate: collisions in runs 1 and 2, off road in run 3; production: clean."""
    cand = [_record("candidate", f"cut_in-{i:03d}", "cut_in", i in (1, 2)) for i in range(4)]
    cand[3] = _off_road(cand[3])
    prod = [_record("production", f"cut_in-{i:03d}", "cut_in", False) for i in range(4)]
    clips = {f"candidate/cut_in-{i:03d}": _file(f"clips/candidate-cut_in-{i:03d}.gif") for i in (1, 2, 3)}
    c_cat, p_cat = summarize_by_category(cand), summarize_by_category(prod)
    c_cat["all"], p_cat["all"] = summarize(cand), summarize(prod)
    ref = SimulationRef(
        device="x86-cpu",
        precision="fp32",
        version="1.0.0",
        production_version="0.9.0",
        sweep="smoke",
        prefix="models/simulation",
        files={
            "violations_heatmap.png": _file("heatmap.png"),
            "sim_summary.parquet": _file("summary.parquet"),
        },
        clips=clips,
        candidate=c_cat,
        production=p_cat,
        runs=4,
        shards_computed=2,
        shards_reused=2,
    )
    return ClosedLoopResult(
        ref=ref,
        candidate=SweepResult("candidate", cand, {}, 1, episodes_computed=4, compute_s=12.0),
        production=SweepResult("production", prod, {}, 1),
        runs=[r.spec for r in cand],
        thumbnails={k: b"GIF89a" for k in thumbs},
        heatmap_png=b"\x89PNG",
        location_uri="file:///store/models/simulation",
    )


def test_num_reads_none_as_nan() -> None:
    assert math.isnan(num(None)) and num(2) == 2.0


def test_failures_name_what_went_wrong_and_link_their_clip() -> None:
    result = _closed_loop(thumbs=set())
    rows = failure_rows(result)
    assert [(r["model"], r["run"], r["what"]) for r in rows] == [
        ("candidate", "cut_in-001", "collision (front) with truck"),
        ("candidate", "cut_in-002", "collision (front) with truck"),
        ("candidate", "cut_in-003", "off road"),
    ]
    assert rows[0]["clip"] == "file:///store/clips/candidate-cut_in-001.gif"
    blocked = result.candidate.records[0]
    blocked = blocked.model_copy(
        update={"metrics": blocked.metrics.model_copy(update={"agent_blocked_events": 1})}
    )
    assert failure_what(blocked) == "blocked"


def test_summary_rows_put_candidate_beside_production_per_category() -> None:
    ref = _closed_loop(thumbs=set()).ref
    rows = summary_rows(ref.candidate, ref.production)
    assert [(r["category"], r["model"]) for r in rows] == [
        ("cut_in", "candidate"),
        ("cut_in", "production"),
        ("all", "candidate"),
        ("all", "production"),
    ]
    assert rows[0]["collisions"] == 2 and rows[1]["collisions"] == 0
    only_candidate = summary_rows(ref.candidate, {"all": ref.production["all"]})
    assert [(r["category"], r["model"]) for r in only_candidate][:2] == [
        ("cut_in", "candidate"),
        ("all", "candidate"),
    ]


def test_at_most_two_candidate_failure_clips_are_embedded_and_only_with_a_thumbnail() -> None:
    result = _closed_loop(thumbs={"candidate/cut_in-002", "candidate/cut_in-003", "candidate/cut_in-001"})
    md = failure_clips_markdown(result, failure_rows(result))
    assert md is not None and md.count("data:image/gif;base64,") == 2
    assert "cut_in-001: collision (front) with truck (fog/day)" in md and "cut_in-003" not in md
    assert failure_clips_markdown(_closed_loop(thumbs=set()), failure_rows(result)) is None


def test_closed_loop_metadata() -> None:
    out = closed_loop_output(_closed_loop(thumbs={"candidate/cut_in-001"}))
    md = out.metadata
    assert isinstance(out, dg.MaterializeResult) and out.value.sweep == "smoke"
    assert {"summary", "violations_heatmap", "failures", "failure_clips", "location"} <= set(md)
    assert md["candidate_collisions"] == 2 and md["production_collisions"] == 0
    assert md["runs_per_model"] == 4 and md["library_runs"] == 0
    assert md["shards"].value == "2 computed, 2 reused from checkpoints (4 episodes, 12 s of worker time)"
    assert "failure_clips" not in closed_loop_output(_closed_loop(thumbs=set())).metadata


def test_replay_tables_compare_candidate_and_production_per_class_and_segment() -> None:
    coco = _coco(TRACKS)
    prod = _dets(coco, lambda t, k: True)
    cand = _dets(coco, lambda t, k: not (t == 3 or (t in (1, 2) and k >= 10)))
    report = replay(coco, cand, prod, ReplayConfig(segment_frames=10, worst_segments=0), PX_PER_M)
    by_class = {r["class"]: r for r in ttfd_rows(report)}
    assert set(by_class) == {"car", "truck", "motorcycle"}
    assert (
        by_class["motorcycle"]["never_detected_cand"] == 1
        and by_class["motorcycle"]["never_detected_prod"] == 0
    )
    assert np.isnan(by_class["motorcycle"]["mean_ttfd_s_cand"]) and by_class["car"]["mean_ttfd_s_prod"] == 0.0
    rows = flagged_rows(report)
    assert rows and [r["segment"] for r in rows] == [f.segment_id for f in report.flagged]
    first = rows[0]
    assert first["condition"] == "fog/day" and first["recall_cand"] < first["recall_prod"]
    assert first["why"] == "; ".join(report.flagged[0].reasons)


@pytest.mark.parametrize("green", [True, False])
def test_the_gate_check_reports_the_failed_checks(green: bool) -> None:
    checks = [
        GateCheck(
            name="collisions", scope="cut_in", passed=green, candidate=1.0, production=0.0, limit="<= 0"
        ),
        GateCheck(name="min_runs", scope="all", passed=True, candidate=4.0, production=4.0, limit=">= 4"),
    ]
    ref = SimVerdictRef(
        device="x86-cpu",
        precision="fp32",
        version="1.0.0",
        production_version="0.9.0",
        green=green,
        rationale=f"## Sim gate {'GREEN' if green else 'RED'}\n\ndetails",
        checks=checks,
        files={"sim_verdict.json": _file("sim_verdict.json")},
    )
    result = sim_gate_check_output(ref)
    assert result.passed is green and result.severity == dg.AssetCheckSeverity.ERROR
    assert result.description == ref.rationale.split("\n", 1)[0]
    assert result.metadata["failed_checks"].value == ("none" if green else "cut_in:collisions")
    assert result.metadata["verdict"].value == ("green" if green else "red")


def test_an_amber_gate_warns_without_blocking_and_names_the_undecided_checks() -> None:
    checks = [
        GateCheck(
            name="collision_rate_increase",
            scope="all",
            status="amber",
            candidate=0.0,
            production=0.0,
            limit="<= production +5 pp (95% Newcombe interval)",
            interval="+0.0 pp [-13.8, +13.8] (n = 24)",
            n_to_decide=73,
        ),
        GateCheck(name="min_runs", scope="all", status="pass", candidate=24.0, production=None, limit=">= 4"),
    ]
    ref = SimVerdictRef(
        device="x86-cpu",
        precision="fp32",
        version="1.0.0",
        production_version="0.9.0",
        green=False,
        verdict="amber",
        rationale="**Sim gate AMBER** (insufficient evidence)\n\ndetails",
        checks=checks,
        files={"sim_verdict.json": _file("sim_verdict.json")},
        runs=24,
    )
    result = sim_gate_check_output(ref)
    # Not green, but only a warning: blocking checks stop downstream runs on ERROR alone.
    assert result.passed is False and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["verdict"].value == "amber"
    assert result.metadata["amber_checks"].value == "all:collision_rate_increase"
    assert result.metadata["failed_checks"].value == "none"
    out = sim_verdict_output(SimVerdictResult(ref=ref, verdict=None))  # type: ignore[arg-type]
    rows = out.metadata["checks"].records
    assert rows[0].data["status"] == "amber" and rows[0].data["interval"] == "+0.0 pp [-13.8, +13.8] (n = 24)"
    assert rows[0].data["runs_to_decide"] == 73 and rows[1].data["runs_to_decide"] is None
    assert out.metadata["runs"].value == "24 paired runs (one look)"
