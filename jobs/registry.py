"""Registry jobs: ``promote_candidate`` and ``rollback`` move a cell's production alias (the
``production_alias`` asset decides what to do from the job's name); ``approve`` records an
approval for a registered version."""

from typing import Literal

import dagster as dg
from pydantic import Field

from adas.registry.approvals import approve_entries, entries_of_version
from adas.registry.models import RegistryError
from adas_assets.partitions import TARGET_PARTITIONS
from adas_assets.registry.assets import production_alias
from resources.registry import RegistryResource

promote_candidate = dg.define_asset_job(
    "promote_candidate",
    selection=dg.AssetSelection.assets(production_alias),
    partitions_def=TARGET_PARTITIONS,
    description="Promote the cell's registry entry to production: governance, plan, local canary, finalize, hooks.",
)

rollback_job = dg.define_asset_job(
    "rollback",
    selection=dg.AssetSelection.assets(production_alias),
    partitions_def=TARGET_PARTITIONS,
    description="Reverse promotion: production goes back to the `rollback` alias (or an in-flight promotion is aborted).",
)


class ApproveConfig(dg.Config):
    version: str = Field(description="semantic version to approve")
    model_name: str = Field(default="", description="default: the only model registered with that version")
    target: str = Field(
        default="all", description="device/precision, or 'all' for every target of the version"
    )
    role: Literal["technical", "safety", "security", "product"]
    actor: str
    reason: str
    decision: Literal["approved", "rejected"] = "approved"
    waive_vulnerabilities: str = Field(
        default="", description="security only: a written justification that waives the vulnerability gate"
    )
    accept_amber: str = Field(
        default="",
        description="accept amber ('insufficient evidence') gate verdicts: quote every undecided interval "
        "as the registry entry states it",
    )


@dg.op(description="Record an approval (technical, safety, security, product) in the registry.")
def record_approval(
    context: dg.OpExecutionContext, config: ApproveConfig, registry: RegistryResource
) -> None:
    reg = registry.store()
    try:
        entries = entries_of_version(reg, config.version, model_name=config.model_name, target=config.target)
        approvals = approve_entries(
            reg,
            entries,
            role=config.role,
            actor=config.actor,
            reason=config.reason,
            decision=config.decision,
            waive_vulnerabilities=config.waive_vulnerabilities,
            accept_amber=config.accept_amber,
        )
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    for a in approvals:
        waived = " (vulnerability gate waived)" if a.waiver is not None else ""
        waived += " (amber verdicts accepted)" if a.amber is not None else ""
        context.log.info(f"{a.entry.ref}: {config.role} {config.decision} by {config.actor}{waived}")
    delivered = registry.deliver()
    if delivered:
        context.log.info(f"webhook: {delivered}")


@dg.job(name="approve", description="Record an approval for a registered version (every target, or one).")
def approve() -> None:
    record_approval()


registry_jobs = [promote_candidate, rollback_job, approve]
