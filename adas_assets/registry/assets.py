"""Registry assets (specification step 18): registry entry and production alias per device x
precision, the promotion / rollback jobs that move the alias, and the approval job."""

import json
import tempfile
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.intake.refs import DatasetRef
from adas.packaging.refs import EngineRef, PackRef
from adas.registry.models import ALIASES, AliasRef, Entry, RegistryEntryRef, RegistryError
from adas.simulation.refs import SimVerdictRef
from adas.storage import ArtifactStore
from adas_assets.automation import SupportedTargetCondition
from adas_assets.metadata import table as _table
from adas_assets.partitions import TARGET_PARTITIONS, per_target_description
from resources.artifact_store import ArtifactStoreParam
from resources.registry import RegistryResource

REGISTRY = "registry"


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|")


def _aliases_table(resource: RegistryResource, target: str) -> dg.TableMetadataValue:
    aliases = resource.store().aliases(target)
    return _table(
        [
            {"alias": a, "version": e.version if e else "-", "entry": e.id if e else 0}
            for a, e in aliases.items()
        ],
        {"alias": "string", "version": "string", "entry": "int"},
    )


def _history_table(resource: RegistryResource, target: str, limit: int = 12) -> dg.TableMetadataValue:
    reg = resource.store()
    moves = reg.events(target=target, kinds=["alias_moved"])[-limit:]
    versions = {e.id: e.version for e in reg.entries(target=target)}
    return _table(
        [
            {
                "at": m.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "alias": m.alias or "",
                "from": versions.get(m.from_entry_id or -1, "-"),
                "to": versions.get(m.to_entry_id or -1, "-"),
                "actor": m.actor,
                "reason": _cell(m.reason)[:160],
                "event": m.id,
            }
            for m in reversed(moves)
        ],
        {
            "at": "string",
            "alias": "string",
            "from": "string",
            "to": "string",
            "actor": "string",
            "reason": "string",
            "event": "int",
        },
    )


# --------------------------------------------------------------------------- registry_entry


def _adopt_production_if_unknown(
    context: dg.AssetExecutionContext,
    resource: RegistryResource,
    store: ArtifactStore,
    production_engine: EngineRef,
    catalog: TargetCatalog,
) -> Entry | None:
    from adas.packaging.serving import build_repository
    from adas.registry.entries import adopted_entry
    from adas.registry.promotion import adopt_production

    reg = resource.store()
    target = Cell(production_engine.device, production_engine.precision).target_name
    if reg.alias_entry(target, "production") is not None:
        return None
    with tempfile.TemporaryDirectory(prefix="adopt-") as tmp:
        built = build_repository(store, production_engine, Path(tmp), "python-onnxruntime")
    body = adopted_entry(store, production_engine, built.ref, catalog)
    entry = adopt_production(reg, body, actor="system:adoption")
    context.log.info(f"{target}: adopted {entry.version} (entry #{entry.id}) as the production baseline")
    return entry


@dg.asset(
    group_name=REGISTRY,
    kinds={"sql"},
    partitions_def=TARGET_PARTITIONS,
    automation_condition=(dg.AutomationCondition.eager() & SupportedTargetCondition()).with_label(
        "eager, supported targets only (red candidates are registered too: governance refuses them)"
    ),
    description=per_target_description(
        "The candidate's immutable registry entry for one target: semantic version, pointers with sha256 "
        "(every pack file, manifest, W&B artifact, container tag, git SHA, dataset tag), performance "
        "summary, slice table, latency budget, supported targets, calibration cache version, evaluation "
        "and simulation verdicts, and its model card. The target's `staging` alias moves to it (a "
        "recorded event). The model already in production is adopted first if the registry names none."
    ),
)
def registry_entry(
    context: dg.AssetExecutionContext,
    model_pack: PackRef,
    regression_gate: GateRef,
    sim_verdict: SimVerdictRef,
    eval_report: EvalReportRef,
    production_engine: EngineRef,
    target_catalog: TargetCatalog,
    artifact_store: ArtifactStoreParam,
    registry: RegistryResource,
) -> dg.MaterializeResult:
    from adas.registry.entries import entry_from_pack
    from adas.registry.finalize import registry_prefix
    from adas.registry.promotion import latest_verdicts, register_entry

    cell = Cell.parse(context.partition_key)

    device, precision = cell.device, cell.precision
    target = Cell(device, precision).target_name
    adopted = _adopt_production_if_unknown(
        context, registry, artifact_store, production_engine, target_catalog
    )
    body = entry_from_pack(
        artifact_store, model_pack, regression_gate, sim_verdict, eval_report, target_catalog
    )
    try:
        entry, created = register_entry(registry.store(), body, actor=f"dagster:{context.run_id[:8]}")
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    webhook = registry.deliver()
    card_key = f"{registry_prefix(entry)}/model_card.md"
    artifact_store.put_bytes(card_key, entry.model_card.encode())
    evaluation, simulation = latest_verdicts(registry.store(), entry)
    p = entry.body.pointers
    ref = RegistryEntryRef(
        entry_id=entry.id,
        model_name=entry.body.model_name,
        version=entry.version,
        target=target,
        digest=entry.digest,
        created=created,
        registry=registry.store().url,
        model_card_uri=artifact_store.uri(card_key),
        adopted_production_entry=adopted.id if adopted else None,
    )
    return dg.MaterializeResult(
        value=ref,
        data_version=dg.DataVersion(entry.digest),
        metadata={
            "entry": f"#{entry.id} {entry.ref}",
            "version": entry.version,
            "digest": entry.digest,
            "newly_registered": created,
            "evaluation_gate": evaluation.status if evaluation else "missing",
            "simulation_gate": simulation.status if simulation else "missing",
            "aliases": _aliases_table(registry, target),
            "pointers": _table(
                [
                    {"pointer": "pack", "value": p.pack_uri},
                    {"pointer": "manifest sha256", "value": p.manifest.sha256 if p.manifest else "-"},
                    {"pointer": "container", "value": p.container_tag or "-"},
                    {"pointer": "W&B artifact", "value": p.wandb_artifact or "-"},
                    {"pointer": "git SHA", "value": p.git_sha},
                    {"pointer": "dataset tag", "value": p.dataset_tag},
                    {"pointer": "training run", "value": p.training_run_id},
                    {"pointer": "calibration cache", "value": entry.body.calibration_cache_version or "-"},
                    {"pointer": "files pinned", "value": str(len(p.artifacts))},
                ],
                {"pointer": "string", "value": "string"},
            ),
            "model_card": dg.MetadataValue.md(entry.model_card),
            "model_card_uri": dg.MetadataValue.url(artifact_store.uri(card_key)),
            **({"adopted_production": f"#{adopted.id} {adopted.version}"} if adopted else {}),
            **({"webhook": json.dumps(webhook)} if webhook else {}),
        },
    )


# --------------------------------------------------------------------------- production_alias


JOB_ACTIONS = {"promote_candidate": "promote", "rollback": "rollback"}


class AliasMoveConfig(dg.Config):
    action: Literal["promote", "rollback"] = Field(
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


def _replay_traffic(store: ArtifactStore, dataset: DatasetRef, max_frames: int) -> Any:
    from adas.packaging.build import load_frames, read_json
    from adas.registry.promotion import Traffic

    replay = read_json(store, dataset.manifests["replay_sequences"])
    images = {img["id"]: img for img in replay["images"]}
    ordered = [images[i] for s in replay["sequences"] for i in s["image_ids"] if i in images]
    ordered = (ordered or list(images.values()))[:max_frames]
    frames = load_frames(store, dataset, [img["file_name"] for img in ordered])
    meta = [
        {k: img[k] for k in ("scenario", "weather", "lighting", "density", "scene_id") if k in img}
        for img in ordered
    ]
    return Traffic(frames, meta)


def _rollout_metadata(result: Any) -> dict[str, Any]:
    r = result.rollout
    if r is None:
        return {}
    meta: dict[str, Any] = {
        "rollout": dg.MetadataValue.md(r.to_markdown()),
        "rollout_outcome": r.outcome,
        "requests": r.requests["sent"],
        "throughput_rps": r.throughput_rps,
        "dropped_requests": r.dropped_requests,
        "dropped_production_requests": r.dropped_production_requests,
        "timeline": _table(
            [
                {
                    "step": s.name,
                    "share": f"{s.weight:g}%",
                    "result": s.result,
                    "start_s": round(s.started_s, 2),
                    "end_s": round(s.ended_s or 0.0, 2),
                    "intervals": s.intervals,
                    "paused": s.paused_intervals,
                }
                for s in r.steps
            ],
            {
                "step": "string",
                "share": "string",
                "result": "string",
                "start_s": "float",
                "end_s": "float",
                "intervals": "int",
                "paused": "int",
            },
        ),
    }
    if r.breach is not None:
        meta["breach_to_rollback_s"] = round(r.breach.breach_to_rollback_s, 3)
    return meta


@dg.asset(
    group_name=REGISTRY,
    kinds={"sql"},
    partitions_def=TARGET_PARTITIONS,
    dagster_type=dg.Any,
    description=per_target_description(
        "The target's `production` alias after a promotion or rollback (jobs `promote_candidate` and "
        "`rollback`). Promotion: governance (approvals, signatures against the pinned key, SBOM, "
        "vulnerabilities or waiver, green verdicts), the target's promotion lock, a plan (also rendered "
        "as Argo Rollouts and SageMaker manifests), a real local canary (two Triton servers behind nginx, "
        "replayed recorded requests, automatic rollback on N consecutive breaches), then production -> "
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
) -> dg.MaterializeResult:
    from adas.registry.promotion import default_promotion_key, promote, rollback

    cell = Cell.parse(context.partition_key)

    device, precision = cell.device, cell.precision
    target = Cell(device, precision).target_name
    # The job says what to do; `action` only matters for a plain materialization.
    action = JOB_ACTIONS.get(context.job_name, config.action)
    if config.target and config.target != target:
        raise dg.Failure(
            description=f"config target {config.target!r} does not match the partition {target!r}"
        )
    if not config.actor.strip() or not config.reason.strip():
        raise dg.Failure(
            description="actor and reason are required: every registry event records who and why"
        )
    reg = registry.store()
    settings = registry.settings(artifact_store)
    if action == "rollback":
        production = reg.alias_entry(target, "production")
        key = config.idempotency_key or f"rollback:{target}:{production.version if production else 'none'}"
        try:
            result = rollback(settings, target, actor=config.actor, reason=config.reason, idempotency_key=key)
        except RegistryError as exc:
            raise dg.Failure(description=str(exc)) from exc
    else:
        version = config.version or registry_entry.version
        try:
            entry = reg.find_entry(registry_entry.model_name, version, target)
        except RegistryError as exc:
            raise dg.Failure(description=str(exc)) from exc
        key = config.idempotency_key or default_promotion_key(reg, entry)
        max_frames = settings.policy.rollout.local.max_frames
        try:
            result = promote(
                settings,
                entry,
                actor=config.actor,
                reason=config.reason,
                idempotency_key=key,
                strategy=config.strategy or None,
                traffic=lambda: _replay_traffic(artifact_store, golden_dataset, max_frames),
            )
        except RegistryError as exc:  # a conflict with another promotion: nothing moved
            raise dg.Failure(description=str(exc)) from exc
        if result.status == "refused":
            assert result.governance is not None
            raise dg.Failure(
                description=result.message,
                metadata={"governance": dg.MetadataValue.md(result.governance.to_markdown())},
            )
        if result.status == "rolled_back":
            context.log.warning(result.message)
    aliases = reg.aliases(target)
    prod, back = aliases["production"], aliases["rollback"]
    value = AliasRef(
        target=target,
        action=action,
        outcome=result.status,
        production_version=prod.version if prod else None,
        production_entry=prod.id if prod else None,
        rollback_version=back.version if back else None,
        promotion_id=result.promotion_id,
        message=result.message,
    )
    metadata: dict[str, Any] = {
        "outcome": result.status,
        "message": result.message,
        "production": prod.version if prod else "none",
        "rollback": back.version if back else "none",
        "aliases": _aliases_table(registry, target),
        "history": _history_table(registry, target),
        **_rollout_metadata(result),
    }
    if result.governance is not None:
        metadata["governance"] = dg.MetadataValue.md(result.governance.to_markdown())
    for name, uri in {
        **result.documents,
        **{k: v for k, v in result.hooks.items() if isinstance(v, str)},
    }.items():
        if uri.startswith(("file://", "s3://")):
            metadata[name.replace(".", "_")] = dg.MetadataValue.url(uri)
    if result.webhook:
        metadata["webhook"] = json.dumps(result.webhook)
    return dg.MaterializeResult(
        value=value,
        data_version=dg.DataVersion(f"{value.production_entry}-{value.outcome}-{result.promotion_id or key}"),
        metadata=metadata,
    )


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


# --------------------------------------------------------------------------- approvals


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


def record_approvals(resource: RegistryResource, config: ApproveConfig) -> list[str]:
    """Record the approval (and waiver) for every matching entry; return one line per entry."""
    reg = resource.store()
    entries = reg.entries(
        version=config.version,
        model_name=config.model_name or None,
        target=None if config.target == "all" else config.target,
    )
    if not entries:
        raise RegistryError(f"no registry entry for version {config.version!r} ({config.target})")
    if len({e.body.model_name for e in entries}) > 1:
        raise RegistryError(f"version {config.version} exists for several models: name one with model_name")
    if config.waive_vulnerabilities and config.role != "security":
        raise RegistryError("only the security role can waive the vulnerability gate")
    lines = []
    for e in entries:
        reg.approve(e.id, config.role, actor=config.actor, reason=config.reason, decision=config.decision)
        line = f"{e.ref}: {config.role} {config.decision} by {config.actor}"
        if config.waive_vulnerabilities:
            reg.waive_vulnerabilities(e.id, actor=config.actor, justification=config.waive_vulnerabilities)
            line += " (vulnerability gate waived)"
        lines.append(line)
    return lines


@dg.op(description="Record an approval (technical, safety, security, product) in the registry.")
def record_approval(
    context: dg.OpExecutionContext, config: ApproveConfig, registry: RegistryResource
) -> None:
    try:
        lines = record_approvals(registry, config)
    except RegistryError as exc:
        raise dg.Failure(description=str(exc)) from exc
    for line in lines:
        context.log.info(line)
    delivered = registry.deliver()
    if delivered:
        context.log.info(f"webhook: {delivered}")


@dg.job(name="approve", description="Record an approval for a registered version (every target, or one).")
def approve() -> None:
    record_approval()


registry_assets = [registry_entry, production_alias]
registry_jobs = [promote_candidate, rollback_job, approve]

__all__ = ["ALIASES", "registry_assets", "registry_jobs"]
