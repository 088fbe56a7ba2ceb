"""Evaluation results -> Dagster metadata: markdown summaries, tables and inline plots.

Each presenter takes a use-case's typed result (``adas.evaluation.cell_evaluation`` and
``adas.evaluation.usecases``) and returns what the asset or check hands to Dagster; nothing here
computes a metric.
"""

import base64
from collections.abc import Iterator
from typing import Any

import dagster as dg

from adas.evaluation.cell_evaluation import CellEvaluation
from adas.evaluation.integrity import INTEGRITY_CHECKS
from adas.evaluation.quantization import markdown as quantization_markdown
from adas.evaluation.refs import GateRef
from adas.evaluation.reports import verdict_markdown
from adas.evaluation.slices import pct, signed_pct
from adas.evaluation.usecases import GateJudgement, IntegrityReport, QuantizationStudy
from adas_assets.metadata import table

SLICE_COLUMNS = {
    "slice": "string",
    "critical": "bool",
    "images": "int",
    "AP": "string",
    "production_AP": "string",
    "delta_AP_pts": "string",
    "status": "string",
}
AGREEMENT_COLUMNS = {
    "precision": "string",
    "mean_matched_iou": "string",
    "mean_abs_score_drift": "string",
    "missing_fraction": "string",
    "extra_fraction": "string",
}
EXPECTATION_COLUMNS = {"table": "string", "rows": "int", "expectations": "int", "failed": "int"}
GATE_COLUMNS = {
    "gate": "string",
    "status": "string",
    "observed": "string",
    "interval_pts": "string",
    "requirement": "string",
}
DECISION_COLUMNS = {
    "delta": "string",
    "interval_pts": "string",
    "limit_pts": "string",
    "verdict": "string",
    "images_to_decide": "int",
}
# The plots shown inline in the eval_report's metadata: metadata key -> (title, file).
INLINE_PLOTS = {
    "pr_curves": ("PR curves", "plots/pr_curves.png"),
    "reliability_diagram": ("reliability", "plots/reliability.png"),
    "confusion_matrix": ("confusion matrix", "plots/confusion_matrix.png"),
    "delta_forest": ("candidate - production, paired intervals", "plots/delta_forest.png"),
}
# Stored reports linked from the eval_report's metadata: metadata key -> file.
REPORT_LINKS = {
    "robustness_plot": "plots/robustness_decay.png",
    "eval_report_json": "eval_report.json",
    "slice_metrics_parquet": "slice_metrics.parquet",
    "robustness_report_json": "robustness_report.json",
    "evaluation_summary_md": "evaluation_summary.md",
}


def png_markdown(title: str, png: bytes, uri: str) -> str:
    """A link to the stored plot and the plot itself, inline."""
    return f"[{title}]({uri})\n\n![{title}](data:image/png;base64,{base64.b64encode(png).decode()})"


# --------------------------------------------------------------------------- dataset integrity


def integrity_check_result(report: IntegrityReport, name: str, asset_key: dg.AssetKey) -> dg.AssetCheckResult:
    """One integrity guard as a blocking check result naming the offending ids."""
    violations = report.checks[name]["violations"]
    metadata: dict[str, Any] = {
        "violations": len(violations),
        "dataset_tag": report.dataset_tag,
        "splits": ", ".join(report.splits),
    }
    if violations:
        metadata["details"] = dg.MetadataValue.md(
            "\n".join(f"- **{v['rule']}**: {v['message']}" for v in violations)
        )
        metadata["offending_ids"] = dg.MetadataValue.text(
            ", ".join(sorted({i for v in violations for i in v["ids"]})[:200])
        )
    if name == "manifest_schema" and report.schema is not None:
        rows = [
            {"table": t, "rows": r["rows"], "expectations": r["evaluated"], "failed": len(r["failures"])}
            for t, r in report.schema["tables"].items()
        ]
        metadata["expectations"] = table(rows, EXPECTATION_COLUMNS)
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=asset_key,
        passed=bool(report.checks[name]["passed"]),
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
        description=violations[0]["message"] if violations else None,
    )


def integrity_check_results(report: IntegrityReport, asset_key: dg.AssetKey) -> Iterator[dg.AssetCheckResult]:
    for name in INTEGRITY_CHECKS:
        yield integrity_check_result(report, name, asset_key)


# --------------------------------------------------------------------------- eval report


def eval_summary_markdown(evaluation: CellEvaluation) -> str:
    """The headline table: candidate vs production, calibration, robustness, latency, gate preview."""
    ref, outcome, latency = evaluation.ref, evaluation.outcome, evaluation.latency
    metrics = outcome.primary.metrics
    report = outcome.eval_report
    pm = report.get("production_primary") or {}
    rs, cal = report["robustness_summary"], report["calibration"]
    production = ref.production_engine
    pcal = report["production_calibration"] or {}
    baseline = production.contract.version if production else "**none** (no baseline: relative gates skipped)"
    suites = f" + challenge suites {', '.join(ref.challenge_suites)}" if ref.challenge_suites else ""
    preview = outcome.verdict_preview
    evidence = outcome.evidence

    def delta(key: str) -> str:
        d = evidence.overall.get(key) if evidence is not None else None
        return d.points() if d is not None else "n/a"

    return "\n".join(
        [
            f"### {evaluation.title}",
            "",
            f"Production: {baseline}; {ref.frames} frames of `{ref.split}` ({ref.dataset_tag}){suites}",
            "",
            "| | candidate | production | delta, points [95% paired interval] (n) |",
            "|---|---|---|---|",
            f"| AP | {pct(metrics['AP'])} | {pct(pm.get('AP')) if pm else 'n/a'} | {delta('AP')} |",
            f"| AP50 | {pct(metrics['AP50'])} | {pct(pm.get('AP50')) if pm else 'n/a'} | {delta('AP50')} |",
            *[
                f"| AP {c} | {pct(v)} | {pct((pm.get('per_class_AP') or {}).get(c)) if pm else 'n/a'} | "
                f"{delta('AP/' + c)} |"
                for c, v in metrics["per_class_AP"].items()
            ],
            f"| ECE / D-ECE | {pct(cal['ece'], 2)} / {pct(cal['dece'], 2)} | "
            + (f"{pct(pcal.get('ece'), 2)} / {pct(pcal.get('dece'), 2)} | |" if production else "n/a | |"),
            f"| mPC / rPC | {pct(rs['mPC'])} / {pct(rs['rPC'], 0)}% | | |",
            f"| p95 latency | {latency.p95_ms:.2f} ms (budget {latency.budget_p95_ms:g} ms) | | |",
            "",
            f"Gate preview: **{preview.verdict.upper()}**: {preview.rationale}",
        ]
    )


def slice_table(evaluation: CellEvaluation) -> dg.TableMetadataValue:
    rows = [
        {
            "slice": r["slice"],
            "critical": bool(r["critical"]),
            "images": int(r["images"]),
            "AP": pct(r["AP"]),
            "production_AP": pct(r["production_AP"]),
            "delta_AP_pts": signed_pct(r["delta_AP"]),
            "status": r["status"],
        }
        for r in evaluation.outcome.slice_frame.iter_rows(named=True)
    ]
    return table(rows, SLICE_COLUMNS)


def eval_report_result(evaluation: CellEvaluation) -> dg.MaterializeResult:
    """The stored evaluation as the asset's value, its headline numbers and reports as metadata."""
    ref, outcome = evaluation.ref, evaluation.outcome
    metrics, report, stored = outcome.primary.metrics, outcome.eval_report, ref.files
    rs, cal = report["robustness_summary"], report["calibration"]
    metadata: dict[str, Any] = {
        "summary": dg.MetadataValue.md(eval_summary_markdown(evaluation)),
        "slices": slice_table(evaluation),
        "AP": float(metrics["AP"]) if metrics["AP"] >= 0 else None,
        "AP50": float(metrics["AP50"]) if metrics["AP50"] >= 0 else None,
        "ece": cal["ece"],
        "dece": cal["dece"],
        "mPC": rs["mPC"],
        "rPC": rs["rPC"],
        "ood_auroc_energy": report["ood"]["auroc_energy"],
        "p95_latency_ms": evaluation.latency.p95_ms,
        "gate_preview": outcome.verdict_preview.verdict,
        "baseline": ref.production_engine.contract.version if ref.production_engine else "none",
        **{
            key: dg.MetadataValue.md(png_markdown(title, evaluation.files[name], stored[name].uri))
            for key, (title, name) in INLINE_PLOTS.items()
            if name in evaluation.files  # no forest plot without a production baseline
        },
        **{key: dg.MetadataValue.url(stored[name].uri) for key, name in REPORT_LINKS.items()},
        "timings_s": table(
            [{"step": k, "seconds": round(v, 2)} for k, v in outcome.timings_s.items()],
            {"step": "string", "seconds": "float"},
        ),
        "wandb": dg.MetadataValue.json(ref.wandb),
    }
    for name in ("drift_per_frame.html", "drift_per_detection.html"):
        if name in stored:
            metadata[name.removesuffix(".html")] = dg.MetadataValue.url(stored[name].uri)
    if report.get("drift"):
        d = report["drift"]
        metadata["drift_summary"] = dg.MetadataValue.md(
            f"Drifted columns (candidate vs production, same frames): {', '.join(d['drifted']) or 'none'}; "
            f"detections/frame {d['production_mean_detections_per_frame']} -> {d['candidate_mean_detections_per_frame']}"
        )
    return dg.MaterializeResult(value=ref, metadata=metadata)


# --------------------------------------------------------------------------- quantization


def _fixed(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def quantization_summary_markdown(study: QuantizationStudy) -> str:
    report, flagged, missing = study.report, study.ref.flagged, study.not_evaluated
    return (
        f"### {study.ref.device}: precisions {', '.join(report['precisions'])} (reference {report['reference']})\n\n"
        + quantization_markdown(report)
        + (f"\n\nNot evaluated yet: {', '.join(missing)}" if missing else "")
        + "\n\n"
        + (
            "Flagged (> 1 AP point lost): "
            + ", ".join(f"{f['precision']}/{f['slice']} {f['delta_AP_points']:+.1f}" for f in flagged)
            if flagged
            else "No slice loses more than 1 AP point against the reference."
        )
    )


def quantization_result(study: QuantizationStudy) -> dg.MaterializeResult:
    agreement = [
        {
            "precision": p,
            "mean_matched_iou": _fixed(a["mean_matched_iou"], 3),
            "mean_abs_score_drift": _fixed(a["mean_abs_score_drift"], 4),
            "missing_fraction": _fixed(a["missing_fraction"], 3),
            "extra_fraction": _fixed(a["extra_fraction"], 3),
        }
        for p, a in study.report["agreement"].items()
    ]
    stored = study.ref.files
    return dg.MaterializeResult(
        value=study.ref,
        metadata={
            "summary": dg.MetadataValue.md(quantization_summary_markdown(study)),
            "agreement_vs_reference": table(agreement, AGREEMENT_COLUMNS),
            "flagged_slices": len(study.ref.flagged),
            "report": dg.MetadataValue.url(stored["quantization_sensitivity.json"].uri),
            "parquet": dg.MetadataValue.url(stored["quantization_sensitivity.parquet"].uri),
        },
    )


# --------------------------------------------------------------------------- regression gate


def _names(items: list[Any]) -> str:
    return ", ".join(items) or "none"


def gate_result(judgement: GateJudgement) -> dg.MaterializeResult:
    ref = judgement.ref
    verdict, stored = ref.verdict, ref.files
    metadata: dict[str, Any] = {
        "verdict": verdict.verdict,
        "passed": verdict.passed,
        "rationale": dg.MetadataValue.md(verdict_markdown(verdict, judgement.title)),
        "gates": table(
            [
                {
                    "gate": g.name,
                    "status": g.status,
                    "observed": g.observed,
                    "interval_pts": g.interval or "",
                    "requirement": g.requirement,
                }
                for g in verdict.gates
            ],
            GATE_COLUMNS,
        ),
        "gated_deltas": table(
            [
                {
                    "delta": f"{d.scope} {d.metric}",
                    "interval_pts": d.delta.points() if d.delta else "undefined",
                    "limit_pts": d.limit,
                    "verdict": d.verdict,
                    "images_to_decide": d.n_to_decide or 0,
                }
                for d in verdict.decisions
            ],
            DECISION_COLUMNS,
        ),
        "amber_deltas": dg.MetadataValue.text(_names([d.quote for d in verdict.amber])),
        "failing_slices": dg.MetadataValue.text(_names([f.slice for f in verdict.failing_slices])),
        "gates_version": verdict.gates_version,
        "verdict_json": dg.MetadataValue.url(stored["gate_verdict.json"].uri),
    }
    if judgement.forest_png is not None and "gate_delta_forest.png" in stored:
        metadata["delta_forest"] = dg.MetadataValue.md(
            png_markdown("paired deltas", judgement.forest_png, stored["gate_delta_forest.png"].uri)
        )
    if "blocking_report.md" in stored and judgement.blocking_report is not None:
        metadata["blocking_report"] = dg.MetadataValue.url(stored["blocking_report.md"].uri)
        metadata["blocking_report_text"] = dg.MetadataValue.md(judgement.blocking_report)
    return dg.MaterializeResult(value=ref, metadata=metadata)


def gate_check_result(gate: GateRef) -> dg.AssetCheckResult:
    """``gate_is_green``: passes with a green gate; amber fails it as a warning (insufficient
    evidence: promotion waits for a person), red as an error; both name why."""
    v = gate.verdict
    metadata: dict[str, Any] = {
        "verdict": v.verdict,
        "failed_gates": dg.MetadataValue.text(_names([g.name for g in v.failed])),
        "failing_slices": dg.MetadataValue.text(_names([f.slice for f in v.failing_slices])),
        "amber_deltas": dg.MetadataValue.text(_names([d.quote for d in v.amber])),
    }
    if "blocking_report.md" in gate.files:
        metadata["blocking_report"] = dg.MetadataValue.url(gate.files["blocking_report.md"].uri)
    return dg.AssetCheckResult(
        passed=gate.passed,
        severity=dg.AssetCheckSeverity.WARN if v.verdict == "amber" else dg.AssetCheckSeverity.ERROR,
        description=v.rationale,
        metadata=metadata,
    )
