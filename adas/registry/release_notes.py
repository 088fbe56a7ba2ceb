"""Release notes of a promotion: what changed, its governance and rollout, how to roll back."""

from datetime import UTC, datetime

from adas.registry.models import Entry


def _link(name: str, uri: str | None) -> str:
    return f"[{name}]({uri})" if uri else f"{name}: not available"


def release_notes(
    entry: Entry,
    previous: Entry | None,
    *,
    model_card_uri: str,
    governance_markdown: str,
    rollout_markdown: str | None,
    promotion_id: str,
    actor: str,
    reason: str,
) -> str:
    b = entry.body
    reports = b.reports
    summary = reports.get("evaluation/evaluation_summary.md")
    sim = reports.get("simulation/sim_verdict.md") or reports.get("simulation/sim_verdict.json")
    sbom = b.security.sbom
    perf = b.performance
    delta = ""
    if perf.AP is not None and perf.production_AP is not None:
        delta = f" ({100 * (perf.AP - perf.production_AP):+.1f} points vs {perf.production_version})"
    lines = [
        f"# Release notes: {b.model_name} {b.version} on {b.target}",
        "",
        f"Promoted to production on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {actor} ({reason}); "
        f"promotion `{promotion_id}`. Previous production: "
        + (f"{previous.version} (now the `rollback` alias)." if previous else "none."),
        "",
        "## Links",
        "",
        f"- {_link('Model card', model_card_uri)}",
        f"- {_link('Evaluation summary', summary.uri if summary else None)}",
        f"- {_link('Simulation verdict', sim.uri if sim else None)}",
        f"- {_link('SBOM (CycloneDX)', sbom.uri if sbom else None)}",
        f"- Pack: {b.pointers.pack_uri} (container `{b.pointers.container_tag}`, W&B `{b.pointers.wandb_artifact}`)",
        "",
        "## What changed",
        "",
        f"- AP@[.5:.95] {100 * perf.AP:.1f}{delta}" if perf.AP is not None else "- AP: n/a",
        f"- lineage: training run `{b.pointers.training_run_id}`, dataset `{b.pointers.dataset_tag}`, "
        f"git `{b.pointers.git_sha}`",
    ]
    regressions = [s for s in b.slices if s.delta_points is not None and s.delta_points < 0]
    if regressions:
        lines.append(
            "- slices below production: "
            + ", ".join(f"{s.slice} ({s.delta_points:+.1f})" for s in regressions)
        )
    lines += ["", "## Governance", "", governance_markdown, ""]
    if rollout_markdown:
        lines += ["## Rollout", "", rollout_markdown, ""]
    lines += [
        "## Rollback",
        "",
        f"`adas-registry rollback --target {b.target} --actor <you> --reason '<why>'` "
        "(or the `rollback` job in Dagster) moves production back to the `rollback` alias.",
        "",
    ]
    return "\n".join(lines)
