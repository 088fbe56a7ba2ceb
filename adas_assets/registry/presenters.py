"""Registry results as Dagster metadata: the aliases and history tables, the entry's pointers,
the rollout timeline; ``registry_entry`` and ``production_alias`` return what these build."""

import json
from typing import Any

import dagster as dg

from adas.registry.aliases import AliasView
from adas.registry.production import AliasMove
from adas.registry.registration import Registration
from adas.registry.rollout.report import RolloutReport
from adas_assets.metadata import table


def _cell(v: Any) -> str:
    return str(v).replace("|", "\\|")


def aliases_table(view: AliasView) -> dg.TableMetadataValue:
    return table(
        [
            {"alias": a, "version": e.version if e else "-", "entry": e.id if e else 0}
            for a, e in view.aliases.items()
        ],
        {"alias": "string", "version": "string", "entry": "int"},
    )


def history_table(view: AliasView) -> dg.TableMetadataValue:
    """The target's latest alias moves, newest first."""
    return table(
        [
            {
                "at": m.at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "alias": m.alias or "",
                "from": view.version_of(m.from_entry_id),
                "to": view.version_of(m.to_entry_id),
                "actor": m.actor,
                "reason": _cell(m.reason)[:160],
                "event": m.id,
            }
            for m in reversed(view.moves)
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


def registration_result(reg: Registration) -> dg.MaterializeResult:
    entry = reg.entry
    p = entry.body.pointers
    return dg.MaterializeResult(
        value=reg.ref,
        data_version=dg.DataVersion(entry.digest),
        metadata={
            "entry": f"#{entry.id} {entry.ref}",
            "version": entry.version,
            "digest": entry.digest,
            "oci_reference": p.oci_reference or "-",
            "newly_registered": reg.created,
            "evaluation_gate": reg.evaluation.status if reg.evaluation else "missing",
            "simulation_gate": reg.simulation.status if reg.simulation else "missing",
            "aliases": aliases_table(reg.view),
            "pointers": table(
                [
                    {"pointer": "pack", "value": p.pack_uri},
                    {"pointer": "manifest sha256", "value": p.manifest.sha256 if p.manifest else "-"},
                    {"pointer": "OCI artifact", "value": p.oci_reference or "-"},
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
            "model_card_uri": dg.MetadataValue.url(reg.model_card_uri),
            **({"adopted_production": f"#{reg.adopted.id} {reg.adopted.version}"} if reg.adopted else {}),
            **({"webhook": json.dumps(reg.webhook)} if reg.webhook else {}),
        },
    )


def rollout_metadata(r: RolloutReport | None) -> dict[str, Any]:
    if r is None:
        return {}
    meta: dict[str, Any] = {
        "rollout": dg.MetadataValue.md(r.to_markdown()),
        "rollout_outcome": r.outcome,
        "requests": r.requests["sent"],
        "throughput_rps": r.throughput_rps,
        **(
            {"offered_rps": r.offered_rps, "capacity_rps": r.capacity_rps}
            if r.offered_rps is not None
            else {}
        ),
        "dropped_requests": r.dropped_requests,
        "dropped_production_requests": r.dropped_production_requests,
        "timeline": table(
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


def refusal(move: AliasMove) -> dg.Failure:
    """A refused promotion as the step's failure, with every unmet condition."""
    governance = move.result.governance
    assert governance is not None
    return dg.Failure(
        description=move.result.message,
        metadata={"governance": dg.MetadataValue.md(governance.to_markdown())},
    )


def alias_move_result(move: AliasMove) -> dg.MaterializeResult:
    result, value = move.result, move.value
    metadata: dict[str, Any] = {
        "outcome": result.status,
        "message": result.message,
        "production": value.production_version or "none",
        "rollback": value.rollback_version or "none",
        "aliases": aliases_table(move.view),
        "history": history_table(move.view),
        **rollout_metadata(result.rollout),
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
        data_version=dg.DataVersion(
            f"{value.production_entry}-{value.outcome}-{result.promotion_id or move.key}"
        ),
        metadata=metadata,
    )
