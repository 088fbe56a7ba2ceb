"""Reports beside the model pack: JSON, parquet, markdown summary, plots, the gate verdict's
markdown and blocking report; W&B logging.

Layout under the pack prefix ``models/<task>/<version>/<device>/<precision>/``::

    eval_report.json  robustness_report.json  slice_metrics.parquet  evaluation_summary.md
    latency_summary.json  predictions.json  production_predictions.json
    drift_per_frame.html  drift_per_detection.html
    plots/pr_curves.png  plots/confusion_matrix.png  plots/reliability.png  plots/robustness_decay.png
    gate_verdict.json  blocking_report.md (red verdicts only)

Every file goes through the artifact store (atomic write, sha256 recorded). JSON is written
with ``allow_nan=False``: an undefined number is ``null``, never NaN.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from adas.evaluation.gates import GateVerdict, points
from adas.evaluation.slices import pct, signed_pct
from adas.intake.refs import StoredFile
from adas.intake.stored import stored_file
from adas.settings import AdasHome
from adas.stats import Interval
from adas.storage import ArtifactStore


def clean_json(obj: Any) -> Any:
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean_json(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str | bytes):
        with contextlib.suppress(ValueError, AttributeError):
            obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def json_bytes(obj: Any) -> bytes:
    return json.dumps(clean_json(obj), indent=2, allow_nan=False, default=str).encode()


def write_files(store: ArtifactStore, prefix: str, files: Mapping[str, bytes]) -> dict[str, StoredFile]:
    """Put every file under ``prefix`` (atomic, hashed); name -> StoredFile."""
    return {
        name: stored_file(store, f"{prefix.rstrip('/')}/{name}", data=data) for name, data in files.items()
    }


# --------------------------------------------------------------------------- summary


def _improved_regressed(slices: list[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    improved, regressed = [], []
    for r in slices:
        if r.get("delta_AP") is None:
            continue
        line = (
            f"{'**' + r['slice'] + '**' if r['critical'] else r['slice']}: AP {pct(r['production_AP'])} -> "
            f"{pct(r['AP'])} ({signed_pct(r['delta_AP'])} pts, {100 * (r['relative_delta_AP'] or 0):+.1f}%)"
        )
        if r["status"] == "improved":
            improved.append(line)
        elif r["status"] == "regressed":
            regressed.append(line)
    return improved, regressed


def summary_markdown(
    report: Mapping[str, Any],
    robustness: Mapping[str, Any],
    verdict: GateVerdict,
    *,
    title: str,
    links: Mapping[str, str] | None = None,
) -> str:
    """``evaluation_summary.md``: headline numbers, What improved / What regressed / Next actions."""
    m = report["primary"]["metrics"]
    prod = report.get("production_primary")
    cal = report["calibration"]
    pcal = report.get("production_calibration") or {}
    rs = report["robustness_summary"]
    ood = report["ood"]
    lat = report.get("latency") or {}
    lines = [f"# Evaluation summary: {title}", ""]
    lines.append(
        f"Verdict preview: **{verdict.verdict.upper()}** ({verdict.rationale}). "
        "The `regression_gate` asset holds the authoritative verdict."
    )
    lines += ["", "## Headline", "", "| metric | candidate | production |", "|---|---|---|"]

    def prod_v(key: str) -> str:
        return pct(prod.get(key)) if prod else "no baseline"

    for key in ("AP", "AP50", "AP75", "AP_small", "AP_medium"):
        lines.append(f"| {key} | {pct(m.get(key))} | {prod_v(key)} |")
    for name, v in m.get("per_class_AP", {}).items():
        pv = pct((prod or {}).get("per_class_AP", {}).get(name)) if prod else "no baseline"
        lines.append(f"| AP {name} | {pct(v)} | {pv} |")
    lines.append(f"| ECE | {pct(cal.get('ece'), 2)} | {pct(pcal.get('ece'), 2) if pcal else 'no baseline'} |")
    lines.append(
        f"| D-ECE | {pct(cal.get('dece'), 2)} | {pct(pcal.get('dece'), 2) if pcal else 'no baseline'} |"
    )
    lines.append(
        f"| Brier | {cal.get('brier') if cal.get('brier') is None else round(cal['brier'], 4)} | {'' if not pcal or pcal.get('brier') is None else round(pcal['brier'], 4)} |"
    )
    lines.append(f"| mPC / rPC | {pct(rs.get('mPC'))} / {pct(rs.get('rPC'), 0)}% | |")
    lines.append(
        f"| OOD AUROC (MSP / energy) | {pct(ood.get('auroc_msp'))} / {pct(ood.get('auroc_energy'))} | |"
    )
    if lat and lat.get("p95_ms") is not None:
        lines.append(
            f"| p95 latency (batch 1) | {lat.get('p95_ms'):.2f} ms ({lat.get('source')}) | budget {lat.get('budget_p95_ms')} ms |"
        )

    improved, regressed = _improved_regressed(list(report["slices"]))
    lines += ["", "## What improved", ""]
    if not report.get("baseline_available"):
        lines.append("- No production baseline for this cell: nothing to compare against.")
    lines += [f"- {x}" for x in improved] or (
        ["- No slice improved beyond noise."] if report.get("baseline_available") else []
    )
    lines += ["", "## What regressed", ""]
    if not report.get("baseline_available"):
        lines.append("- No production baseline for this cell: regressions cannot be measured.")
    lines += [f"- {x}" for x in regressed] or (
        ["- No slice regressed beyond noise."] if report.get("baseline_available") else []
    )

    lines += ["", "## Next actions", ""]
    actions: list[str] = []
    # Absolute findings (not relative to production) go here: they need work either way.
    faults = robustness.get("sensor_faults") or {}
    if faults and not faults.get("passed", True):
        failing = faults.get("failing", [])
        detail = ", ".join(
            f"{k} (max score {faults['faults'][k]['max_score']:.2f})"
            for k in failing
            if k in faults.get("faults", {})
        )
        actions.append(
            f"Sensor-fault rule broken: confident detections on faulty camera frames: {detail}; "
            "add blank/noise frames with no boxes to training or gate on an input-health monitor."
        )
    temporal = robustness.get("temporal") or {}
    if temporal.get("unstable_conditions"):
        actions.append(
            f"Tracker continuity unstable under {', '.join(temporal['unstable_conditions'])}: "
            "check frame buffering / timestamp handling downstream."
        )
    if verdict.verdict == "amber":
        for d in verdict.amber:
            more = f" (about {d.n_to_decide} images would decide it)" if d.n_to_decide else ""
            actions.append(
                f"Insufficient evidence on `{d.gate}` {d.scope}: {d.quote}{more}; evaluate on more "
                "images of that slice, or record an approval that quotes this interval."
            )
    if not verdict.passed:
        for g in verdict.failed:
            actions.append(f"Fix gate `{g.name}`: {g.rationale}")
        if verdict.failing_slices:
            names = ", ".join(f.slice for f in verdict.failing_slices)
            actions.append(
                f"Mine and label more data for the failing critical slices ({names}), retrain, resubmit."
            )
    else:
        actions.append(
            "Gates green: proceed to replay and simulation gates (step 17), then registry review (step 18)."
        )
    worst = rs.get("worst_corruptions") or []
    if worst:
        actions.append(
            f"Weakest under corruption: {', '.join(worst)}; add matching augmentations to training."
        )
    for name, c in (cal.get("per_class") or {}).items():
        rec = c.get("recommended_threshold", {})
        if rec.get("threshold") is not None:
            actions.append(
                f"Threshold for {name}: {rec['threshold']:.2f} maximises F1 ({rec['f1']:.2f}) vs "
                f"{report['operating_threshold']:g} in the contract"
            )
    if ood.get("abstention", {}).get("ood_frames_with_confident_detection"):
        rate = ood["abstention"]["ood_frames_with_confident_detection"]
        actions.append(
            f"{100 * rate:.0f}% of OOD probes get a confident detection: review abstention / OOD monitoring."
        )
    lines += [f"- {a}" for a in actions]
    lines += ["", "## Gates (preview)", "", verdict_markdown(verdict, "Regression gates")]
    evidence = report.get("paired_evidence")
    if evidence:
        lines += ["", evidence_markdown(evidence, verdict)]
    if links:
        lines += ["", "## Files", ""] + [f"- [{k}]({v})" for k, v in links.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- gate verdict


def verdict_markdown(verdict: GateVerdict, title: str) -> str:
    icon = {"pass": "pass", "amber": "**AMBER**", "fail": "**FAIL**", "skipped": "skipped"}
    lines = [
        f"### {title}: {verdict.verdict.upper()}",
        "",
        verdict.rationale,
        "",
        "| gate | status | observed | interval (points) | requirement | rationale |",
        "|---|---|---|---|---|---|",
    ]
    for g in verdict.gates:
        lines.append(
            f"| {g.name} | {icon[g.status]} | {g.observed} | {g.interval or ''} | {g.requirement} | "
            f"{g.rationale.replace('|', '/')} |"
        )
    if verdict.decisions:
        lines += [
            "",
            "| gated delta | interval (points) | limit | verdict | would decide |",
            "|---|---|---|---|---|",
        ]
        for d in verdict.decisions:
            shown = d.delta.points() if d.delta else "undefined"
            need = f"~{d.n_to_decide} images" if d.n_to_decide else ""
            lines.append(f"| {d.scope} {d.metric} | {shown} | {d.limit} | {d.verdict} | {need} |")
    lines.append("")
    if verdict.confidence:
        lines.append(f"Intervals: {verdict.confidence}.")
    lines.append(f"gates.yaml version {verdict.gates_version} (sha256 `{verdict.gates_sha256[:12]}`)")
    return "\n".join(lines)


def evidence_markdown(evidence: Mapping[str, Any], verdict: GateVerdict) -> str:
    """Every paired delta (not only the gated ones): overall, per class, per slice."""
    lines = [
        "## Paired deltas (candidate - production, points)",
        "",
        f"{evidence['method']}, {evidence['resamples']} resamples, seed {evidence['seed']}, "
        f"{100 * evidence['confidence']:g}% intervals. Plot: `plots/delta_forest.png`.",
        "",
        "| scope | metric | delta [low, high] (n) |",
        "|---|---|---|",
    ]

    def fmt(d: Mapping[str, Any]) -> str:
        return Interval(d["point"], d["low"], d["high"], d["n"], d["confidence"]).format(scale=100.0)

    for key, d in evidence["overall"].items():
        lines.append(f"| all | {key} | {fmt(d)} |")
    if evidence.get("calibration"):
        lines.append(f"| all | {evidence.get('calibration_metric', 'ece')} | {fmt(evidence['calibration'])} |")
    for name, deltas in evidence.get("slices", {}).items():
        for key in ("AP", "AP50"):
            if key in deltas:
                lines.append(f"| {name} | {key} | {fmt(deltas[key])} |")
    return "\n".join(lines)


def blocking_report(verdict: GateVerdict, title: str, context: Mapping[str, str] | None = None) -> str:
    """The report a red verdict emits: failing gates and slices, and where to route the work."""
    ctx = dict(context or {})
    lines = [f"# BLOCKED: {title}", ""]
    for k, v in ctx.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "## Failing gates", ""]
    for g in verdict.failed:
        lines.append(f"- **{g.name}**: {g.rationale} (observed {g.observed}; required {g.requirement})")
    lines += ["", "## Failing slices", ""]
    if verdict.failing_slices:
        lines += [
            "| slice | production AP | candidate AP | relative change | images |",
            "|---|---|---|---|---|",
        ]
        for f in verdict.failing_slices:
            lines.append(
                f"| {f.slice} | {points(f.production_AP)} | {points(f.candidate_AP)} | "
                f"{'n/a' if f.relative_change is None else f'{100 * f.relative_change:+.1f}%'} | {f.images} |"
            )
    else:
        lines.append("No critical slice regressed; the failure is elsewhere (see the gates above).")
    lines += [
        "",
        "## Next actions",
        "",
        "- Promotion of this engine is blocked (`gate_is_green` asset check failed).",
    ]
    if verdict.failing_slices:
        names = ", ".join(f.slice for f in verdict.failing_slices)
        lines.append(
            f"- Route to data mining (steps 8/12): collect and label more frames for {names}; "
            "then retrain (step 14) and resubmit."
        )
    if any(g.name == "weighted_map" for g in verdict.failed):
        lines.append(
            "- Route to training (step 14): the overall weighted mAP is shown worse than production "
            "beyond the tolerance (or short of the required improvement)."
        )
    if any(g.name == "safety_recall" for g in verdict.failed):
        lines.append(
            "- Route to training (step 14): recall on a safety-critical class dropped at the operating point."
        )
    if any(g.name == "latency" for g in verdict.failed):
        lines.append(
            "- Route to packaging (step 15): the engine is over its latency budget (lower precision, smaller model)."
        )
    if any(g.name == "calibration" for g in verdict.failed):
        lines.append("- Recalibrate scores (temperature scaling) or retune thresholds before resubmitting.")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- W&B


def wandb_dir(adas_home: Path | str | None = None) -> Path:
    home = Path(adas_home) if adas_home is not None else AdasHome.from_env().root
    path = home / "wandb"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_to_wandb(
    *,
    project: str,
    mode: str,
    run_name: str,
    config: Mapping[str, Any],
    summary: Mapping[str, Any],
    images: Mapping[str, bytes],
    files: Mapping[str, str],
    slice_rows: list[Mapping[str, Any]],
    adas_home: Path | str | None = None,
    log: Callable[[str], None] = lambda _s: None,
) -> dict[str, Any]:
    """One W&B run (offline by default, under ``$ADAS_HOME/wandb``) with metrics, the slice table,
    plots and links to the stored reports. Returns where it went; never raises on W&B problems."""
    if mode == "disabled":
        return {"mode": "disabled"}
    directory = wandb_dir(adas_home)
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb

        run = wandb.init(
            project=project,
            name=run_name,
            mode=mode,  # type: ignore[arg-type]
            dir=str(directory),
            job_type="evaluation",
            config=dict(clean_json(config)),
            reinit="finish_previous",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )
        flat = {k: v for k, v in clean_json(summary).items() if isinstance(v, int | float) and v is not None}
        payload: dict[str, Any] = dict(flat)
        if slice_rows:
            cols = list(slice_rows[0].keys())
            payload["slice_metrics"] = wandb.Table(
                columns=cols, data=[[clean_json(r[c]) for c in cols] for r in slice_rows]
            )
        for name, png in images.items():
            payload[name] = wandb.Image(Image.open(io.BytesIO(png)))
        run.log(payload)
        run.summary.update({**flat, **{f"file/{k}": v for k, v in files.items()}})
        out = {"mode": mode, "run_id": run.id, "dir": str(directory), "project": project}
        run.finish()
        return out
    except Exception as exc:  # W&B is reporting, never a reason to fail an evaluation
        log(f"W&B logging failed: {exc!r}")
        return {"mode": mode, "error": repr(exc), "dir": str(directory)}
