"""Registry assets (specification step 18): the registry entry and the production alias per
device x precision. The jobs that move the alias (``promote_candidate``, ``rollback``) and the
``approve`` job are in ``jobs.registry``; the use-cases in ``adas.registry``."""

from typing import Literal

import dagster as dg
from pydantic import Field

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.intake.refs import DatasetRef
from adas.intake.stored import DatasetFiles
from adas.packaging.refs import EngineRef, PackRef, PublishedPackRef
from adas.registry.models import RegistryEntryRef, RegistryError
from adas.registry.production import AliasMoveRequest, move_production_alias
from adas.registry.registration import CandidateInputs, register_candidate
from adas.registry.replay import replay_traffic
from adas.simulation.refs import SimVerdictRef
from adas_assets.automation import SupportedTargetCondition
from adas_assets.owners import REGISTRY_OWNERS
from adas_assets.partitions import TARGET_PARTITIONS, per_target_description
from adas_assets.registry.presenters import alias_move_result, refusal, registration_result
from resources.artifact_store import ArtifactStoreParam
from resources.oci_registry import OciRegistryResource
from resources.registry import RegistryResource

REGISTRY = "registry"
Action = Literal["promote", "rollback"]
# The job says what to do; `action` only matters for a plain materialization.
JOB_ACTIONS: dict[str, Action] = {"promote_candidate": "promote", "rollback": "rollback"}


@dg.asset(
    group_name=REGISTRY,
    owners=REGISTRY_OWNERS,
    kinds={"sql"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=(dg.AutomationCondition.eager() & SupportedTargetCondition()).with_label(
        "eager, supported targets only (red candidates are registered too: governance refuses them)"
    ),
    description=per_target_description(
        "The candidate's immutable registry entry for one target: semantic version, pointers with sha256 "
        "(every pack file, manifest, the pack's OCI reference `repository@sha256:...`, W&B artifact, "
        "container tag, git SHA, dataset tag), performance "
        "summary, slice table, latency budget, supported targets, calibration cache version, evaluation "
        "and simulation verdicts, and its model card. The target's `staging` alias moves to it (a "
        "recorded event). The model already in production is adopted first if the registry names none."
    ),
)
def registry_entry(
    context: dg.AssetExecutionContext,
    model_pack: PackRef,
    published_pack: PublishedPackRef,
    regression_gate: GateRef,
    sim_verdict: SimVerdictRef,
    eval_report: EvalReportRef,
    production_engine: EngineRef,
    target_catalog: TargetCatalog,
    artifact_store: ArtifactStoreParam,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    settings = registry.core()
    inputs = CandidateInputs(
        model_pack, regression_gate, sim_verdict, eval_report, production_engine, published=published_pack
    )
    try:
        registration = register_candidate(
            settings.store(),
            artifact_store,
            target_catalog,
            inputs,
            actor=f"dagster:{context.run_id[:8]}",
            notifier=settings.notifier(),
            log=context.log.info,
        )
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    return registration_result(registration)


class AliasMoveConfig(dg.Config):
    action: Action = Field(
        default="promote",
        description="promote the registry entry, or roll production back (the promote_candidate and "
        "rollback jobs decide this themselves)",
    )
    actor: str = Field(default="", description="who asks (recorded with every event)")
    reason: str = Field(default="", description="why (recorded with every event)")
    idempotency_key: str = Field(
        default="",
        description="retries with the same key do nothing twice; default: one per action, target and version",
    )
    target: str = Field(default="", description="device/precision; must match the partition when given")
    strategy: Literal["", "canary", "shadow", "ab"] = Field(
        default="", description="default: config/registry.yaml"
    )
    version: str = Field(default="", description="version to promote; default: the registry_entry's")


@dg.asset(
    group_name=REGISTRY,
    owners=REGISTRY_OWNERS,
    kinds={"sql"},
    partitions_def=TARGET_PARTITIONS,
    dagster_type=dg.Any,
    description=per_target_description(
        "The target's `production` alias after a promotion or rollback (jobs `promote_candidate` and "
        "`rollback`). Promotion: governance (approvals, the signed manifest against the trusted keys, SBOM, "
        "vulnerabilities or waiver, green verdicts or amber ones accepted by a quoting approval), the target's promotion lock, a plan (also rendered "
        "as Argo Rollouts and SageMaker manifests), a real local canary (two Triton servers behind nginx, "
        "replayed recorded requests; a rank test against a same-period baseline rolls back a slower canary, "
        "errors and SLO breaches roll back at once, an undecided step is held; both Triton repositories "
        "pulled by their pinned OCI digests, every layer and the signature verified first), then production -> "
        "candidate and previous -> `rollback` in one transaction, release notes and post-promotion hooks. "
        "Never materialized by automation."
    ),
)
def production_alias(
    context: dg.AssetExecutionContext,
    config: AliasMoveConfig,
    registry_entry: RegistryEntryRef,
    golden_dataset: DatasetRef,
    artifact_store: ArtifactStoreParam,
    registry: RegistryResource,
    oci_registry: OciRegistryResource,
) -> dg.MaterializeResult:
    target = Cell.parse(context.partition_key).target_name
    if config.target and config.target != target:
        raise dg.Failure(
            description=f"config target {config.target!r} does not match the partition {target!r}"
        )
    request = AliasMoveRequest(
        action=JOB_ACTIONS.get(context.job_name, config.action),
        target=target,
        actor=config.actor,
        reason=config.reason,
        model_name=registry_entry.model_name,
        version=config.version or registry_entry.version,
        idempotency_key=config.idempotency_key,
        strategy=config.strategy or None,
    )
    settings = registry.settings(artifact_store, oci_registry.core())
    max_frames = settings.policy.rollout.local.max_frames
    try:
        move = move_production_alias(
            settings,
            request,
            traffic=lambda: replay_traffic(DatasetFiles.of(artifact_store, golden_dataset), max_frames),
        )
    except RegistryError as exc:  # a conflict with another promotion: nothing moved
        raise dg.Failure(description=str(exc)) from exc
    if move.result.status == "refused":
        raise refusal(move)
    if move.warning:
        context.log.warning(move.warning)
    return alias_move_result(move)


registry_assets = [registry_entry, production_alias]

__all__ = ["AliasMoveConfig", "production_alias", "registry_assets", "registry_entry"]
