"""Registration: a candidate's immutable entry (staged on its target), re-evaluations appended as
events, and the adoption of the model already in production when the registry names none.

:func:`register_candidate` is the use-case behind the ``registry_entry`` asset.
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adas.catalog import TargetCatalog
from adas.cell import Cell
from adas.evaluation.refs import EvalReportRef, GateRef
from adas.packaging.oci_deploy import parse_reference
from adas.packaging.refs import EngineRef, PackRef, PublishedPackRef
from adas.packaging.serving import build_repository
from adas.registry.aliases import AliasView, alias_view
from adas.registry.entries import adopted_entry, entry_from_pack
from adas.registry.model_card import render_model_card
from adas.registry.models import (
    Entry,
    EntryBody,
    RegistryEntryRef,
    Verdict,
    json_digest,
    registry_prefix,
)
from adas.registry.store import ImmutableEntryError, RegistryStore
from adas.registry.webhook import WebhookNotifier, deliver
from adas.simulation.refs import SimVerdictRef
from adas.storage import ArtifactStore


def _same_pack(existing: EntryBody, body: EntryBody) -> bool:
    """Whether ``body`` points at the pack ``existing`` registered. An entry registered before
    packs were published has no OCI reference; the same pack published since is still its pack.
    References compare by digest: the registry's address (a local port, a mirror) may change."""
    old_ref, new_ref = existing.pointers.oci_reference, body.pointers.oci_reference
    if old_ref is not None and (
        new_ref is None or parse_reference(old_ref).digest != parse_reference(new_ref).digest
    ):
        return False
    return existing.pointers.without_oci() == body.pointers.without_oci()


def register_entry(registry: RegistryStore, body: EntryBody, *, actor: str) -> tuple[Entry, bool]:
    """Register ``body`` with its model card and point the target's ``staging`` alias at it
    (both recorded; idempotent)."""
    try:
        entry, created = registry.register(body, render_model_card(body), actor=actor)
    except ImmutableEntryError:
        # Same pack, new evaluation (a nightly re-run, a challenge suite): the entry stays as
        # registered; the newer verdicts are appended as an event that governance reads.
        existing = registry.find_entry(body.model_name, body.version, body.target)
        if not _same_pack(existing.body, body):
            raise
        if body.pointers.oci_reference and existing.body.pointers.oci_reference is None:
            # Registered before packs were published: the entry cannot gain the reference, so
            # the publication of that same pack is recorded beside it.
            registry.record_event(
                "oci_published",
                actor=actor,
                reason="the registered pack was published to the OCI registry after registration",
                idempotency_key=f"oci:{existing.id}:{body.pointers.oci_reference}",
                target=existing.target,
                entry_id=existing.id,
                payload={"oci_reference": body.pointers.oci_reference, "oci_tag": body.pointers.oci_tag},
            )
        update = {
            "evaluation": body.evaluation.model_dump(mode="json") if body.evaluation else None,
            "simulation": body.simulation.model_dump(mode="json") if body.simulation else None,
            "performance": body.performance.model_dump(mode="json"),
        }
        registry.record_event(
            "verdicts_updated",
            actor=actor,
            reason="re-evaluated: newer evaluation/simulation verdicts for the same pack",
            idempotency_key=f"verdicts:{existing.id}:{json_digest(update)}",
            target=existing.target,
            entry_id=existing.id,
            payload=update,
        )
        entry, created = existing, False
    staging = registry.alias_entry(entry.target, "staging")
    if staging is None or staging.id != entry.id:
        registry.move_alias(
            entry.target,
            "staging",
            entry.id,
            actor=actor,
            reason=f"{entry.version} registered and staged for {entry.target}",
            idempotency_key=f"staging:{entry.id}",
        )
    return entry, created


def adopt_production(registry: RegistryStore, body: EntryBody, *, actor: str) -> Entry:
    """Adopt the model already in production (an ``adopted`` entry) when the registry names no
    production version for its target yet; recorded as a ``production_adopted`` event."""
    entry, _ = registry.register(
        body,
        render_model_card(body),
        actor=actor,
        reason="adopted: in production before the registry managed it",
    )
    if registry.alias_entry(entry.target, "production") is None:
        registry.change_target(
            entry.target,
            kind="production_adopted",
            actor=actor,
            reason=f"{entry.version} was serving {entry.target} before the registry managed it",
            idempotency_key=f"adopt:{entry.target}:{entry.digest[:16]}",
            moves={"production": entry.id},
            entry_id=entry.id,
        )
    return entry


def latest_verdicts(registry: RegistryStore, entry: Entry) -> tuple[Verdict | None, Verdict | None]:
    """The newest evaluation and simulation verdicts of ``entry`` (its own, or re-evaluations)."""
    evaluation, simulation = entry.body.evaluation, entry.body.simulation
    for e in registry.events(entry_id=entry.id, kinds=["verdicts_updated"]):
        if e.payload.get("evaluation"):
            evaluation = Verdict.model_validate(e.payload["evaluation"])
        if e.payload.get("simulation"):
            simulation = Verdict.model_validate(e.payload["simulation"])
    return evaluation, simulation


def adopt_production_if_unknown(
    registry: RegistryStore,
    store: ArtifactStore,
    production_engine: EngineRef,
    catalog: TargetCatalog,
    log: Callable[[str], None] = lambda _: None,
) -> Entry | None:
    """Adopt the engine serving production (with a Triton repository built from it) when the
    registry names no production version for its target; ``None`` when it already does."""
    target = Cell(production_engine.device, production_engine.precision).target_name
    if registry.alias_entry(target, "production") is not None:
        return None
    with tempfile.TemporaryDirectory(prefix="adopt-") as tmp:
        built = build_repository(store, production_engine, Path(tmp), "python-onnxruntime")
    body = adopted_entry(store, production_engine, built.ref, catalog)
    entry = adopt_production(registry, body, actor="system:adoption")
    log(f"{target}: adopted {entry.version} (entry #{entry.id}) as the production baseline")
    return entry


@dataclass(frozen=True)
class CandidateInputs:
    """What the pipeline produced for one cell: the pack, its gate, simulation and evaluation,
    and the engine serving production there."""

    pack: PackRef
    gate: GateRef
    sim: SimVerdictRef
    report: EvalReportRef
    production_engine: EngineRef
    published: PublishedPackRef | None = None  # the pack in the OCI registry, pinned by digest


@dataclass(frozen=True)
class Registration:
    entry: Entry
    created: bool
    adopted: Entry | None
    evaluation: Verdict | None
    simulation: Verdict | None
    model_card_uri: str
    ref: RegistryEntryRef
    view: AliasView
    webhook: dict[str, int]


def register_candidate(
    registry: RegistryStore,
    store: ArtifactStore,
    catalog: TargetCatalog,
    inputs: CandidateInputs,
    *,
    actor: str,
    notifier: WebhookNotifier | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Registration:
    """Adopt production if unknown, register the candidate's entry and stage it, store its
    model card, send pending events to the webhook."""
    adopted = adopt_production_if_unknown(registry, store, inputs.production_engine, catalog, log)
    body = entry_from_pack(
        store, inputs.pack, inputs.gate, inputs.sim, inputs.report, catalog, published=inputs.published
    )
    entry, created = register_entry(registry, body, actor=actor)
    webhook = deliver(notifier, registry)
    card = store.put_bytes(f"{registry_prefix(entry)}/model_card.md", entry.model_card.encode())
    evaluation, simulation = latest_verdicts(registry, entry)
    ref = RegistryEntryRef(
        entry_id=entry.id,
        model_name=entry.body.model_name,
        version=entry.version,
        target=entry.target,
        digest=entry.digest,
        created=created,
        registry=registry.url,
        model_card_uri=card.uri,
        adopted_production_entry=adopted.id if adopted else None,
    )
    return Registration(
        entry=entry,
        created=created,
        adopted=adopted,
        evaluation=evaluation,
        simulation=simulation,
        model_card_uri=card.uri,
        ref=ref,
        view=alias_view(registry, entry.target),
        webhook=webhook,
    )
