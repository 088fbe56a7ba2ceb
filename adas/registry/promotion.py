"""One promotion, end to end and resumable: governance -> lock -> plan -> rollout -> finalize -> hooks.

Every step is recorded as a registry event whose idempotency key derives from the promotion's
key, so a rerun after a crash (same key) skips what is done and completes the rest:

``<key>:started``      the target's promotion lock taken, ``candidate`` alias set
``<key>:planned``      the plan and its Argo Rollouts / SageMaker renderings stored
``<key>:rollout:<n>``  attempt n of the rollout (a crashed attempt is simply run again:
                       its servers died with it, production never moved)
``<key>:completed``    production -> candidate, previous -> rollback, lock released: ONE
                       transaction, so a crash leaves either the old or the new state
``<key>:hook:*``       release notes, access policy, mining request, next weekly evaluation,
                       retention pruning; then every pending event goes to the webhook.

A rollout that rolls back records ``<key>:rolled-back`` (lock released, production untouched).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

from adas.catalog import TargetCatalog
from adas.registry.config import RegistryPolicy, Strategy
from adas.registry.entries import triton_files
from adas.registry.finalize import (
    WebhookNotifier,
    finalize_aliases,
    mining_request,
    next_weekly_evaluation,
    prune_intermediates,
    readonly_iam_policy,
    registry_prefix,
    release_notes,
    rollback_aliases,
)
from adas.registry.governance import GovernanceReport, check_governance, verify_artifacts
from adas.registry.models import Entry, RegistryError, Verdict
from adas.registry.rollout import LocalRollout, PromotionPlan, RolloutReport, make_plan, plan_documents
from adas.registry.store import RegistryStore
from adas.storage import ArtifactStore


class SimulatedCrash(RuntimeError):
    """Raised at a chosen point by tests, to prove a rerun completes the promotion."""


@dataclass
class Traffic:
    """Recorded requests to replay: uint8 frames [N, H, W, 3] and per-frame tags."""

    frames: np.ndarray
    meta: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PromotionSettings:
    registry: RegistryStore
    store: ArtifactStore
    policy: RegistryPolicy
    pinned_public_key_pem: bytes | None
    # Placement of the rendered Argo / SageMaker documents; None renders them without one.
    catalog: TargetCatalog | None = None
    notifier: WebhookNotifier | None = None
    workdir: Path | None = None
    triton_venv: Path | None = None
    iam_bucket: str | None = None
    iam_prefix: str | None = None


class PromotionResult(BaseModel):
    status: Literal["promoted", "refused", "rolled_back", "aborted"]
    promotion_id: str | None
    target: str
    version: str | None
    previous_version: str | None
    message: str
    governance: GovernanceReport | None = None
    rollout: RolloutReport | None = None
    documents: dict[str, str] = {}
    hooks: dict[str, Any] = {}
    webhook: dict[str, int] = {}


RolloutRunner = Callable[
    [PromotionPlan, Path, Path, Traffic, Callable[[str, dict[str, Any]], None]], RolloutReport
]


def promotion_id_for(key: str) -> str:
    return "prm-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def local_runner(settings: PromotionSettings) -> RolloutRunner:
    def run(
        plan: PromotionPlan,
        production: Path,
        candidate: Path,
        traffic: Traffic,
        progress: Callable[[str, dict[str, Any]], None],
    ) -> RolloutReport:
        local = settings.policy.rollout.local
        frames = traffic.frames[: local.max_frames]
        return LocalRollout(
            plan,
            production_repository=production,
            candidate_repository=candidate,
            frames=frames,
            frame_meta=traffic.meta[: local.max_frames],
            concurrency=local.concurrency,
            drain_timeout_s=local.drain_timeout_s,
            workdir=production.parent / "rollout",
            triton_venv=settings.triton_venv,
            progress=progress,
        ).run()

    return run


def materialize_repository(store: Any, entry: Entry, dest: Path) -> Path:
    """The entry's Triton model repository, every file hash-verified, under ``dest``."""
    files = triton_files(entry.body)
    if not files:
        raise RegistryError(f"{entry.ref} has no Triton repository in its pack: nothing to serve")
    shutil.rmtree(dest, ignore_errors=True)
    for rel, p in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.fetch(p.key, expected_sha256=p.sha256), target)
    return dest


def _put_text(store: Any, key: str, text: str) -> str:
    store.put_bytes(key, text.encode())
    return store.uri(key)


def promote(
    settings: PromotionSettings,
    entry: Entry,
    *,
    actor: str,
    reason: str,
    idempotency_key: str,
    strategy: Strategy | None = None,
    traffic: Traffic | Callable[[], Traffic] | None = None,
    evaluation: Verdict | None = None,
    simulation: Verdict | None = None,
    runner: RolloutRunner | None = None,
    crash_at: str | None = None,
) -> PromotionResult:
    """Promote ``entry`` to production on its target (see the module docstring). ``traffic``
    (or a function that loads it, called only when a rollout runs) is what the canary replays."""
    reg, store = settings.registry, settings.store
    target = entry.target
    pid = promotion_id_for(idempotency_key)
    k = idempotency_key
    documents: dict[str, str] = {}

    def record(kind: str, key: str, reason_: str, payload: dict[str, Any] | None = None) -> None:
        reg.record_event(
            kind,
            actor=actor,
            reason=reason_,
            idempotency_key=key,
            target=target,
            entry_id=entry.id,
            promotion_id=pid,
            payload=payload,
        )

    def crash(point: str) -> None:
        if crash_at == point:
            raise SimulatedCrash(f"simulated crash {point} (promotion {pid})")

    if evaluation is None and simulation is None:
        evaluation, simulation = latest_verdicts(reg, entry)
    completed = reg.event_by_key(f"{k}:completed")
    workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="promotion-")) / pid
    workdir.mkdir(parents=True, exist_ok=True)
    governance: GovernanceReport | None = None
    rollout: RolloutReport | None = None
    if completed is None:
        # 1. Governance: every condition, every time (approvals may have changed since).
        governance = check_governance(
            reg,
            store,
            entry,
            pinned_public_key_pem=settings.pinned_public_key_pem,
            policy=settings.policy.governance,
            evaluation=evaluation,
            simulation=simulation,
            workdir=workdir / "governance",
        )
        verdict = {c.name: (c.met, c.detail if not c.met else "") for c in governance.conditions}
        record(
            "governance_checked",
            f"{k}:governance:{_digest(verdict)}",
            governance.summary().splitlines()[0],
            {"passed": governance.passed, "unmet": [c.model_dump() for c in governance.unmet]},
        )
        if not governance.passed:
            record(
                "promotion_refused",
                f"{k}:refused:{_digest(verdict)}",
                governance.summary(),
                {"unmet": [c.model_dump() for c in governance.unmet]},
            )
            return PromotionResult(
                status="refused",
                promotion_id=pid,
                target=target,
                version=entry.version,
                previous_version=(p.version if (p := reg.alias_entry(target, "production")) else None),
                message=governance.summary(),
                governance=governance,
                webhook=_notify(settings),
            )
        # 2. The target's promotion lock (exactly one promotion per target at a time).
        production = reg.alias_entry(target, "production")
        reg.change_target(
            target,
            kind="promotion_started",
            actor=actor,
            reason=reason,
            idempotency_key=f"{k}:started",
            moves={"candidate": entry.id},
            entry_id=entry.id,
            promotion_id=pid,
            lock="acquire",
            payload={
                "version": entry.version,
                "production_version": production.version if production else None,
                "strategy": strategy or settings.policy.rollout.strategy,
            },
        )
        if reg.target_state(target).active_promotion != pid:
            ended = reg.events(promotion_id=pid, kinds=["promotion_aborted", "promotion_rolled_back"])
            raise RegistryError(
                f"promotion {pid} (key {k!r}) already ended"
                + (
                    f" by event #{ended[-1].id} ({ended[-1].kind} by {ended[-1].actor}: {ended[-1].reason})"
                    if ended
                    else ""
                )
                + "; start a new promotion with a new idempotency key"
            )
        crash("after_start")
        # 3. The plan, and the same plan rendered for production controllers.
        plan = make_plan(
            settings.policy.rollout,
            target=target,
            model_name=entry.body.model_name,
            candidate_version=entry.version,
            production_version=production.version if production else None,
            strategy=strategy,
        )
        documents.update(_plan_documents(settings, entry, plan, pid))
        record(
            "promotion_planned",
            f"{k}:planned",
            f"{plan.strategy}: " + " -> ".join(s.name for s in plan.steps),
            {"plan": json.loads(plan.model_dump_json()), "documents": documents},
        )
        # 4. The rollout, for real (skipped for a first deployment: no production to compare).
        if production is None:
            record(
                "rollout_skipped",
                f"{k}:rollout:skipped",
                f"no production version on {target}: first deployment",
            )
        else:
            rollout = _run_rollout(
                settings, entry, production, plan, traffic, runner, record, k, pid, crash_at
            )
            documents["rollout_report.json"] = _put_text(
                store, f"registry/promotions/{pid}/rollout_report.json", rollout.model_dump_json(indent=2)
            )
            if rollout.outcome == "rolled_back":
                reg.change_target(
                    target,
                    kind="promotion_rolled_back",
                    actor="rollout-guard",
                    reason=rollout.reason,
                    idempotency_key=f"{k}:rolled-back",
                    moves={"candidate": None},
                    entry_id=entry.id,
                    promotion_id=pid,
                    lock="release",
                    payload={
                        "breach": rollout.breach.model_dump() if rollout.breach else None,
                        "dropped_requests": rollout.dropped_requests,
                    },
                )
                hooks = {"mining_request": _mining_hook(settings, entry, pid, k, actor, rollout)}
                return PromotionResult(
                    status="rolled_back",
                    promotion_id=pid,
                    target=target,
                    version=entry.version,
                    previous_version=production.version,
                    message=f"rolled back automatically: {rollout.reason}; production stays {production.version}",
                    governance=governance,
                    rollout=rollout,
                    documents=documents,
                    hooks=hooks,
                    webhook=_notify(settings),
                )
        crash("after_rollout")
        # 5. Finalize: one transaction.
        version = reg.target_state(target).version
        finalize_aliases(
            reg,
            entry,
            promotion_id=pid,
            actor=actor,
            reason=reason,
            idempotency_key=f"{k}:completed",
            expected_version=version,
        )
        crash("after_finalize")
    completed = reg.event_by_key(f"{k}:completed")
    assert completed is not None
    now_production = reg.alias_entry(target, "production")
    if now_production is None or now_production.id != entry.id:
        return PromotionResult(
            status="promoted",
            promotion_id=pid,
            target=target,
            version=entry.version,
            previous_version=completed.payload.get("previous_production"),
            message=f"promotion {pid} completed earlier (event #{completed.id}); production on {target} has since "
            f"moved to {now_production.version if now_production else 'none'}: promote again with a new key",
        )
    previous_id = completed.payload.get("previous_production_entry")
    previous = reg.get_entry(previous_id) if previous_id else None
    hooks = _post_promotion_hooks(
        settings, entry, previous, pid, k, actor, reason, governance, rollout, documents
    )
    crash("after_hooks")
    return PromotionResult(
        status="promoted",
        promotion_id=pid,
        target=target,
        version=entry.version,
        previous_version=previous.version if previous else None,
        message=f"{entry.version} is production on {target}"
        + (f"; {previous.version} is the rollback" if previous else ""),
        governance=governance,
        rollout=rollout,
        documents=documents,
        hooks=hooks,
        webhook=_notify(settings),
    )


def _plan_documents(
    settings: PromotionSettings, entry: Entry, plan: PromotionPlan, pid: str
) -> dict[str, str]:
    b = entry.body
    try:
        if settings.catalog is None:
            raise KeyError(b.device)
        t = settings.catalog.target(b.device)
        node_selector = dict(t.kubernetes.node_selector)
        tolerations = [tol.model_dump(exclude_none=True) for tol in t.kubernetes.tolerations]
        gpus = t.kubernetes.gpu_count
    except KeyError:
        node_selector, tolerations, gpus = {}, [], 0
    bucket = settings.iam_bucket or settings.policy.iam.bucket
    root = (settings.iam_prefix if settings.iam_prefix is not None else settings.policy.iam.prefix).strip("/")
    s3_pack = f"s3://{bucket}/{root + '/' if root else ''}{b.pointers.pack_prefix}"
    docs = plan_documents(
        plan,
        image=b.pointers.container_tag or f"{b.model_name}:{b.version}",
        model_repository_uri=f"{s3_pack}/triton",
        model_data_url=f"{s3_pack}/triton.tar.gz",
        node_selector=node_selector,
        tolerations=tolerations,
        gpu_count=gpus,
    )
    return {
        name: _put_text(settings.store, f"registry/promotions/{pid}/{name}", text)
        for name, text in docs.items()
    }


def _run_rollout(
    settings: PromotionSettings,
    entry: Entry,
    production: Entry,
    plan: PromotionPlan,
    traffic: Traffic | Callable[[], Traffic] | None,
    runner: RolloutRunner | None,
    record: Callable[..., None],
    k: str,
    pid: str,
    crash_at: str | None,
) -> RolloutReport:
    reg = settings.registry
    if callable(traffic):
        traffic = traffic()
    if traffic is None or len(traffic.frames) == 0:
        raise RegistryError(f"promotion {pid}: no recorded requests to replay for the rollout")
    attempt = 1 + len(reg.events(promotion_id=pid, kinds=["rollout_started"]))
    base = Path(settings.workdir or tempfile.gettempdir()) / pid / f"attempt-{attempt}"
    prod_repo = materialize_repository(settings.store, production, base / "production")
    cand_repo = materialize_repository(settings.store, entry, base / "candidate")
    record(
        "rollout_started",
        f"{k}:rollout:{attempt}",
        f"attempt {attempt}: {production.version} (production) vs {entry.version} (candidate), {plan.strategy}",
        {"attempt": attempt, "frames": len(traffic.frames)},
    )
    counter = {"n": 0}

    def progress(kind: str, data: dict[str, Any]) -> None:
        if kind in ("step_passed", "rollback_decided", "rolled_back"):
            counter["n"] += 1
            record(
                "rollout_step",
                f"{k}:rollout:{attempt}:{counter['n']}",
                f"{kind}: {data.get('name') or data.get('step') or ''} {data.get('reason') or ''}".strip(),
                {"event": kind, **{x: v for x, v in data.items() if not isinstance(v, dict)}},
            )
        if crash_at == "mid_rollout" and kind == "step_passed":
            raise SimulatedCrash(f"simulated crash during the rollout (promotion {pid})")

    report = (runner or local_runner(settings))(plan, prod_repo, cand_repo, traffic, progress)
    record(
        "rollout_finished",
        f"{k}:rollout:{attempt}:finished",
        f"{report.outcome}: {report.reason}",
        {
            "outcome": report.outcome,
            "throughput_rps": report.throughput_rps,
            "requests": report.requests["sent"],
            "dropped_requests": report.dropped_requests,
            "dropped_production_requests": report.dropped_production_requests,
            "breach_to_rollback_s": report.breach.breach_to_rollback_s if report.breach else None,
            "steps": [s.model_dump() for s in report.steps],
        },
    )
    return report


def _mining_hook(
    settings: PromotionSettings, entry: Entry, pid: str, k: str, actor: str, rollout: RolloutReport | None
) -> str:
    key = f"{k}:hook:mining"
    uri_key = f"registry/promotions/{pid}/mining_request.json"
    if settings.registry.event_by_key(key) is None:
        failing = list(entry.body.evaluation.failing) if entry.body.evaluation else []
        body = mining_request(
            entry,
            promotion_id=pid,
            failing_slices=failing,
            diff_clusters=rollout.diff_clusters if rollout else [],
        )
        uri = _put_text(settings.store, uri_key, json.dumps(body, indent=2))
        settings.registry.record_event(
            "mining_requested",
            actor=actor,
            reason=f"seed offline mining from {len(body['error_clusters'])} error clusters and "
            f"{len(body['failing_slices']) + len(body['regressed_slices'])} weak slices",
            idempotency_key=key,
            target=entry.target,
            entry_id=entry.id,
            promotion_id=pid,
            payload={"request": uri, "priority": body["priority"], "clusters": body["error_clusters"][:5]},
        )
    return settings.store.uri(uri_key)


def _post_promotion_hooks(
    settings: PromotionSettings,
    entry: Entry,
    previous: Entry | None,
    pid: str,
    k: str,
    actor: str,
    reason: str,
    governance: GovernanceReport | None,
    rollout: RolloutReport | None,
    documents: dict[str, str],
) -> dict[str, Any]:
    reg, store = settings.registry, settings.store
    prefix = registry_prefix(entry)
    hooks: dict[str, Any] = {}

    def once(kind: str, name: str, reason_: str, payload: dict[str, Any]) -> None:
        key = f"{k}:hook:{name}"
        if reg.event_by_key(key) is None:
            reg.record_event(
                kind,
                actor=actor,
                reason=reason_,
                idempotency_key=key,
                target=entry.target,
                entry_id=entry.id,
                promotion_id=pid,
                payload=payload,
            )

    card_uri = _put_text(store, f"{prefix}/model_card.md", entry.model_card)
    hooks["model_card"] = card_uri
    notes_key = f"registry/promotions/{pid}/release_notes.md"
    if reg.event_by_key(f"{k}:hook:release-notes") is None:
        notes = release_notes(
            entry,
            previous,
            model_card_uri=card_uri,
            governance_markdown=governance.to_markdown() if governance else "(checked by an earlier attempt)",
            rollout_markdown=rollout.to_markdown() if rollout else None,
            promotion_id=pid,
            actor=actor,
            reason=reason,
        )
        _put_text(store, notes_key, notes)
        once(
            "release_notes_published",
            "release-notes",
            f"release notes for {entry.version}",
            {"uri": store.uri(notes_key)},
        )
    hooks["release_notes"] = store.uri(notes_key)
    iam_key = f"{prefix}/iam_readonly_policy.json"
    policy_doc = readonly_iam_policy(entry, settings.policy.iam, settings.iam_bucket, settings.iam_prefix)
    hooks["iam_policy"] = _put_text(store, iam_key, json.dumps(policy_doc, indent=2))
    once(
        "access_policy_rendered",
        "iam",
        f"read-only access to {entry.body.pointers.pack_prefix} for serving consumers",
        {"uri": hooks["iam_policy"], "resources": policy_doc["Statement"][0]["Resource"]},
    )
    hooks["mining_request"] = _mining_hook(settings, entry, pid, k, actor, rollout)
    due = next_weekly_evaluation(datetime.now(UTC))
    weekly = reg.event_by_key(f"{k}:hook:weekly-eval")
    once(
        "evaluation_scheduled",
        "weekly-eval",
        f"next weekly full-library evaluation of {entry.version} on {entry.target}",
        {"due_at": due.isoformat(), "schedule": "weekly_full_library_evaluation", "profile": "full"},
    )
    weekly = reg.event_by_key(f"{k}:hook:weekly-eval")
    hooks["weekly_evaluation_due"] = weekly.payload["due_at"] if weekly else due.isoformat()
    if reg.event_by_key(f"{k}:hook:retention") is None:
        pruned = prune_intermediates(store, reg, settings.policy.retention)
        once(
            "retention_pruned",
            "retention",
            pruned.summary(),
            {"deleted": pruned.deleted[:50], "count": len(pruned.deleted)},
        )
        hooks["retention"] = pruned.summary()
    hooks.update(documents)
    return hooks


def _notify(settings: PromotionSettings) -> dict[str, int]:
    if settings.notifier is None:
        return {}
    return settings.notifier.deliver_pending(settings.registry)


def rollback(
    settings: PromotionSettings, target: str, *, actor: str, reason: str, idempotency_key: str
) -> PromotionResult:
    """Reverse promotion. With a promotion in flight (e.g. one that crashed) it is aborted:
    its lock released, production untouched. Otherwise production moves back to the
    ``rollback`` entry, after its artifacts re-hash to the sha256 the entry pins."""
    reg = settings.registry
    state = reg.target_state(target)
    production = reg.alias_entry(target, "production")
    if state.active_promotion is not None:
        reg.change_target(
            target,
            kind="promotion_aborted",
            actor=actor,
            reason=reason,
            idempotency_key=f"{idempotency_key}:abort",
            moves={"candidate": None},
            promotion_id=state.active_promotion,
            lock="release",
        )
        return PromotionResult(
            status="aborted",
            promotion_id=state.active_promotion,
            target=target,
            version=production.version if production else None,
            previous_version=None,
            message=f"aborted in-flight promotion {state.active_promotion}; production unchanged"
            + (f" ({production.version})" if production else ""),
            webhook=_notify(settings),
        )
    back = reg.alias_entry(target, "rollback")
    if back is None and reg.event_by_key(idempotency_key) is None:
        raise RegistryError(f"{target}: no rollback version recorded, nothing to roll back to")
    if back is not None:
        with tempfile.TemporaryDirectory(prefix="rollback-verify-") as tmp:
            check = verify_artifacts(settings.store, back.body, settings.pinned_public_key_pem, Path(tmp))
        if check.hash_problems:
            raise RegistryError(
                f"{back.ref}: refusing to roll back to artifacts that no longer verify: {'; '.join(check.hash_problems[:3])}"
            )
    events = rollback_aliases(reg, target, actor=actor, reason=reason, idempotency_key=idempotency_key)
    now = reg.alias_entry(target, "production")
    return PromotionResult(
        status="rolled_back",
        promotion_id=None,
        target=target,
        version=now.version if now else None,
        previous_version=events[0].payload.get("from_version") if events else None,
        message=f"production on {target} is {now.version if now else 'none'} again",
        webhook=_notify(settings),
    )


# --------------------------------------------------------------------------- registration


def register_entry(registry: RegistryStore, body: Any, *, actor: str) -> tuple[Entry, bool]:
    """Register ``body`` (an :class:`~adas.registry.models.EntryBody`) with its model card
    and point the target's ``staging`` alias at it (both recorded; idempotent)."""
    from adas.registry.model_card import render_model_card
    from adas.registry.store import ImmutableEntryError

    try:
        entry, created = registry.register(body, render_model_card(body), actor=actor)
    except ImmutableEntryError:
        # Same pack, new evaluation (a nightly re-run, a challenge suite): the entry stays as
        # registered; the newer verdicts are appended as an event that governance reads.
        existing = registry.find_entry(body.model_name, body.version, body.target)
        if existing.body.pointers != body.pointers:
            raise
        update = {
            "evaluation": body.evaluation.model_dump(mode="json") if body.evaluation else None,
            "simulation": body.simulation.model_dump(mode="json") if body.simulation else None,
            "performance": body.performance.model_dump(mode="json"),
        }
        registry.record_event(
            "verdicts_updated",
            actor=actor,
            reason="re-evaluated: newer evaluation/simulation verdicts for the same pack",
            idempotency_key=f"verdicts:{existing.id}:{_digest(update)}",
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


def adopt_production(registry: RegistryStore, body: Any, *, actor: str) -> Entry:
    """Adopt the model already in production (an ``adopted`` entry) when the registry names no
    production version for its target yet; recorded as a ``production_adopted`` event."""
    from adas.registry.model_card import render_model_card

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


def default_promotion_key(registry: RegistryStore, entry: Entry) -> str:
    """``promote:<target>:<version>`` for the first attempt; the same key again while that attempt
    is in flight (resume) or holds production (no-op); a new numbered key once an attempt ended
    without leaving the entry in production (rolled back, aborted, or reverted later)."""
    base = f"promote:{entry.target}:{entry.version}"
    starts = [
        e for e in registry.events(entry_id=entry.id, kinds=["promotion_started"]) if e.entry_id == entry.id
    ]
    if not starts:
        return base
    last = starts[-1]
    key = last.idempotency_key.removesuffix(":started")
    ended = registry.events(
        promotion_id=last.promotion_id,
        kinds=["promotion_completed", "promotion_rolled_back", "promotion_aborted"],
    )
    if not ended:
        return key  # in flight (or crashed): resume it
    production = registry.alias_entry(entry.target, "production")
    if ended[-1].kind == "promotion_completed" and production is not None and production.id == entry.id:
        return key  # done: a replay is a no-op
    return f"{base}:attempt-{len(starts) + 1}"
