"""The model card of a registry entry (markdown), generated from its pack, evaluation and
simulation, in the spirit of Mitchell et al. 2019 "Model Cards for Model Reporting"."""

from __future__ import annotations

from adas.registry.models import EntryBody, Verdict


def _pts(v: float | None) -> str:
    return "n/a" if v is None else f"{100.0 * v:.1f}"


def _cell(text: object) -> str:
    # A '|' inside a markdown table cell splits the cell (Dagster's renderer included).
    return str(text).replace("|", "\\|").replace("\n", " ")


def _verdict_line(v: Verdict | None, what: str) -> str:
    if v is None:
        return f"- **{what}**: not recorded"
    failing = f" (failing: {', '.join(v.failing)})" if v.failing else ""
    amber = f" (insufficient evidence: {'; '.join(v.amber)})" if v.status == "amber" else ""
    report = f" — [report]({v.report.uri})" if v.report else ""
    return f"- **{what}**: {v.status.upper()} for {v.device}/{v.precision}{failing}{amber}{report}"


def _deltas(intervals: dict[str, str]) -> str:
    keys = [k for k in ("weighted_AP", "AP", "AP50") if k in intervals]
    keys += [k for k in intervals if k not in keys]
    return "; ".join(f"{k} {intervals[k]}" for k in keys)


def render_model_card(body: EntryBody) -> str:
    p, perf, sec = body.pointers, body.performance, body.security
    lines = [
        f"# Model card: {body.model_name} {body.version}",
        "",
        f"Target **{body.target}** ({body.runtime}). Task `{body.task}`: 2D detection of "
        f"{', '.join(body.classes)} in forward-camera frames of the ADAS perception stack.",
        "",
        "## Intended use",
        "",
        "Perception input to driver-assistance functions on the listed deployment targets, behind the "
        "planning stack's plausibility checks. Not a sole safety mechanism; not validated outside the "
        "operational design domain covered by the golden dataset and the simulation library.",
        "",
        "## Lineage",
        "",
        "| field | value |",
        "|---|---|",
        f"| training run | `{_cell(p.training_run_id)}` |",
        f"| dataset tag | `{_cell(p.dataset_tag)}` |",
        f"| git SHA | `{_cell(p.git_sha)}` |",
        f"| bundle sha256 | `{p.bundle_sha256[:16]}…` |",
        f"| W&B artifact | `{_cell(p.wandb_artifact or 'n/a')}` |",
        f"| container | `{_cell(p.container_tag or 'n/a')}` |",
        f"| pack | {p.pack_uri} |",
        *([f"| OCI artifact | `{_cell(p.oci_reference)}` |"] if p.oci_reference else []),
        f"| calibration cache | `{body.calibration_cache_version or 'n/a (not int8)'}` |",
        "",
    ]
    if body.adopted:
        lines += [
            "> Adopted baseline: the model that was in production before the registry managed this "
            "target. It has no signed pack and was not promoted through governance.",
            "",
        ]
    lines += [
        "## Performance",
        "",
        f"- AP@[.5:.95] **{_pts(perf.AP)}**, AP50 {_pts(perf.AP50)}"
        + (
            f"; production {perf.production_version}: AP {_pts(perf.production_AP)}"
            if perf.production_version
            else ""
        ),
        f"- expected calibration error: {perf.ece:.4f}" if perf.ece is not None else "- calibration: n/a",
        f"- latency p95 {perf.latency_p95_ms:.2f} ms (budget {body.latency_budget_ms.get('p95', float('nan')):g} ms, "
        f"{perf.latency_source})"
        if perf.latency_p95_ms is not None
        else f"- latency budget p95 {body.latency_budget_ms.get('p95', float('nan')):g} ms (not measured)",
        f"- evaluated on {perf.eval_frames} frames of `{perf.eval_dataset_tag}`" if perf.eval_frames else "",
        *(
            [
                f"- delta vs production, points [95% paired bootstrap interval] (n images): {_deltas(perf.delta_intervals)}"
            ]
            if perf.delta_intervals
            else []
        ),
        "",
    ]
    if perf.per_class_AP:
        lines += ["| class | AP |", "|---|---|"]
        lines += [f"| {_cell(c)} | {_pts(v)} |" for c, v in sorted(perf.per_class_AP.items())]
        lines.append("")
    if body.slices:
        lines += [
            "### Slices",
            "",
            "| slice | critical | images | AP | production AP | delta (points) [95% paired interval] (n) |",
            "|---|---|---|---|---|---|",
        ]
        for s in body.slices:
            delta = s.delta_interval or ("n/a" if s.delta_points is None else f"{s.delta_points:+.1f}")
            lines.append(
                f"| {_cell(s.slice)} | {'yes' if s.critical else ''} | {s.images} | {_pts(s.AP)} | "
                f"{_pts(s.production_AP)} | {delta} |"
            )
        lines.append("")
    weak = [s for s in body.slices if s.delta_points is not None and s.delta_points < 0]
    lines += ["## Limitations and known weaknesses", ""]
    if weak:
        lines += [
            f"- {s.slice}: {s.delta_points:+.1f} AP points vs production"
            + (" (critical)" if s.critical else "")
            for s in sorted(weak, key=lambda s: s.delta_points or 0.0)
        ]
    else:
        lines.append("- no slice regresses against production on the golden dataset")
    if body.evaluation and body.evaluation.failing:
        lines.append(f"- evaluation gate failures: {', '.join(body.evaluation.failing)}")
    lines += [
        "",
        "## Gates",
        "",
        _verdict_line(body.evaluation, "evaluation gate"),
        _verdict_line(body.simulation, "simulation gate"),
        "",
        "## Security and supply chain",
        "",
        f"- SBOM: {f'[sbom.cdx.json]({sec.sbom.uri})' if sec.sbom else 'missing'}",
        f"- vulnerability scan: {sec.vulnerability_status or 'missing'}"
        + (f" ({sec.vulnerability_reason})" if sec.vulnerability_reason else "")
        + (
            " — " + ", ".join(f"{n} {s}" for s, n in sec.vulnerability_counts.items() if n)
            if any(sec.vulnerability_counts.values())
            else ""
        ),
        f"- licenses: {'passed' if sec.licenses_passed else 'failed' if sec.licenses_passed is False else 'n/a'}",
        f"- signatures: ECDSA P-256 per file (cosign blob format), public key sha256 "
        f"`{(p.public_key_sha256 or 'n/a')[:16]}`",
        f"- files: {len(p.artifacts)} with sha256 pinned in this entry"
        + (f"; manifest sha256 `{p.manifest.sha256[:16]}…`" if p.manifest else ""),
        "",
        "## Supported targets",
        "",
        ", ".join(f"`{t}`" for t in body.supported_targets) or "n/a",
        "",
    ]
    return "\n".join(line for line in lines if line is not None)
