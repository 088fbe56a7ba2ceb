"""The registry step of ``make demo``: record the four approvals (and, for a pack that could not
be scanned offline, a written vulnerability waiver), then run ``promote_candidate`` for each
CPU cell. The result is the candidate promoted through a real local canary, or refused with
every reason; the registry history shows every move.

An amber gate verdict ("insufficient evidence") is never promoted automatically. The demo plays
the safety reviewer a person would be: it prints the undecided intervals and records a safety
approval that quotes them (``accept_amber``), so the demo shows the whole path, refusal reasons
included. A red verdict is never accepted.

Called from ``scripts/run_demo.py`` with the demo's Definitions and instance::

    from jobs.demo_promotion import promote_demo_candidate
    lines, ok = promote_demo_candidate(defs, instance)
"""

from typing import Any

import dagster as dg

from adas.cell import Cell, supported_cells
from adas.registry.aliases import entry_versions
from adas.registry.models import ROLES
from resources.targets import TARGET_CATALOG

DEMO_WAIVER = (
    "Offline demo environment: the vulnerability scanner has no database here. The SBOM was "
    "reviewed by the security lead; production images are scanned in CI before release."
)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    """Each failed step's message without the exception's class name; a refusal keeps its
    list of unmet conditions (one per line), which is the point of printing it."""
    messages = []
    for e in result.all_events:
        if e.event_type_value != "STEP_FAILURE":
            continue
        text = str(e.event_specific_data.error.message).strip()  # type: ignore[union-attr]
        head, _, rest = text.partition("\n")
        head = head.split(": ", 1)[1] if head.startswith("dagster.") and ": " in head else head
        messages.append(
            "\n".join([head, *[f"    {line.strip()}" for line in rest.splitlines() if line.strip()]])
        )
    return "; ".join(messages)


def promote_demo_candidate(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    cells: list[str] | None = None,
    actor: str = "demo",
) -> tuple[list[str], bool]:
    """Approve and promote the registered candidate on each cell (default: the supported
    x86-cpu cells); returns report lines and whether every cell ended promoted or refused
    with reasons (a crash or an unexpected error is False)."""
    resource = defs.resources["registry"]
    reg = resource.store()
    cells = cells or [c.key for c in supported_cells(TARGET_CATALOG) if c.device == "x86-cpu"]
    lines: list[str] = []
    ok = True
    for cell in cells:
        target = Cell.parse(cell).target_name
        staged = reg.alias_entry(target, "staging")
        if staged is None:
            lines.append(f"{target}: no registry entry (registry_entry not materialized)")
            ok = False
            continue
        for role in ROLES:
            cfg: dict[str, Any] = {
                "version": staged.version,
                "target": target,
                "model_name": staged.body.model_name,
                "role": role,
                "actor": f"{actor}:{role}-lead",
                "reason": f"{role} review of {staged.version} (demo)",
            }
            if role == "security" and staged.body.security.vulnerability_status != "scanned":
                cfg["waive_vulnerabilities"] = DEMO_WAIVER
            undecided = [
                q
                for v in (staged.body.evaluation, staged.body.simulation)
                if v and v.status == "amber"
                for q in v.amber
            ]
            if role == "safety" and undecided:
                cfg["accept_amber"] = "; ".join(undecided)
                cfg["reason"] = (
                    f"demo safety reviewer: read the undecided intervals of {staged.version} and accepts them "
                    "(in production a person decides this)"
                )
                lines.append(
                    f"{target}: AMBER (insufficient evidence), accepted by the demo's safety reviewer quoting:"
                )
                lines += [f"    {q}" for q in undecided]
            result = defs.resolve_job_def("approve").execute_in_process(
                run_config={"ops": {"record_approval": {"config": cfg}}},
                instance=instance,
                raise_on_error=False,
            )
            if not result.success:
                lines.append(f"{target}: {role} approval failed: {_failure(result)}")
                ok = False
        result = defs.resolve_job_def("promote_candidate").execute_in_process(
            run_config={
                "ops": {
                    "production_alias": {
                        "config": {
                            "actor": f"{actor}:release-manager",
                            "reason": "demo release through a local canary",
                        }
                    }
                }
            },
            instance=instance,
            partition_key=cell,
            raise_on_error=False,
        )
        if result.success:
            mat = result.asset_materializations_for_node("production_alias")[0].metadata
            line = f"{target}: {mat['outcome'].value}: {mat['message'].value}"
            if "throughput_rps" in mat:
                paced = (
                    f", paced at {mat['offered_rps'].value} of the {mat['capacity_rps'].value} req/s "
                    "production answered alone"
                    if "offered_rps" in mat
                    else ""
                )
                line += (
                    f" ({mat['requests'].value} requests at {mat['throughput_rps'].value} req/s{paced}, "
                    f"{mat['dropped_requests'].value} dropped)"
                )
            lines.append(line)
        else:
            message = _failure(result)
            lines.append(f"{target}: {message}")
            ok = ok and "promotion refused" in message
        history = reg.history(target)
        versions = entry_versions(reg, target)
        for c in history.changes:
            lines.append(
                f"    {c.at:%H:%M:%S} production -> {versions.get(c.to_entry_id or -1, 'none')} by {c.actor}: {c.reason}"
            )
    return lines, ok
