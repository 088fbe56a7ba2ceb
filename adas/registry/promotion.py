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
A deployment refused (the pinned OCI artifact does not verify) records ``<key>:deploy-refused``
(lock released, production untouched, nothing served).

The rollout step lives in :mod:`adas.registry.rollout_step`, the hooks in
:mod:`adas.registry.hooks`, the alias transactions in :mod:`adas.registry.aliases`.
"""

import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from adas.registry.aliases import finalize_aliases, rollback_aliases
from adas.registry.config import Strategy
from adas.registry.deploy import DeployRefused, deploy_entry
from adas.registry.governance import GovernanceReport, check_governance, verify_artifacts
from adas.registry.hooks import PromotionHooks
from adas.registry.models import Entry, RegistryError, Verdict, json_digest
from adas.registry.registration import latest_verdicts
from adas.registry.replay import Traffic
from adas.registry.rollout.plan import PromotionPlan, make_plan
from adas.registry.rollout.report import RolloutReport
from adas.registry.rollout_step import RolloutRunner, run_rollout, store_plan_documents
from adas.registry.settings import PromotionSettings
from adas.registry.webhook import deliver


class SimulatedCrash(RuntimeError):
    """Raised at a chosen point by tests, to prove a rerun completes the promotion."""


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
    # e.g. the pinned tag moved to another digest: the pinned digest was deployed regardless
    warnings: list[str] = []


def promotion_id_for(key: str) -> str:
    return "prm-" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class _Promotion:
    """One promotion of ``entry`` under ``key``: its events, crash points and results."""

    settings: PromotionSettings
    entry: Entry
    actor: str
    reason: str
    key: str
    strategy: Strategy | None
    crash_at: str | None

    @property
    def pid(self) -> str:
        return promotion_id_for(self.key)

    @property
    def target(self) -> str:
        return self.entry.target

    def record(self, kind: str, key: str, reason: str, payload: dict[str, Any] | None = None) -> None:
        self.settings.registry.record_event(
            kind,
            actor=self.actor,
            reason=reason,
            idempotency_key=key,
            target=self.target,
            entry_id=self.entry.id,
            promotion_id=self.pid,
            payload=payload,
        )

    def crash(self, point: str) -> None:
        if self.crash_at == point:
            raise SimulatedCrash(f"simulated crash {point} (promotion {self.pid})")

    def result(self, status: str, previous_version: str | None, message: str, **kw: Any) -> PromotionResult:
        return PromotionResult(
            status=status,  # type: ignore[arg-type]
            promotion_id=self.pid,
            target=self.target,
            version=self.entry.version,
            previous_version=previous_version,
            message=message,
            **kw,
        )

    def notify(self) -> dict[str, int]:
        return deliver(self.settings.notifier, self.settings.registry)

    # ------------------------------------------------------------------ the steps
    def check_governance(
        self, evaluation: Verdict | None, simulation: Verdict | None, workdir: Path
    ) -> GovernanceReport:
        """Every condition, every time (approvals may have changed since); recorded."""
        settings = self.settings
        governance = check_governance(
            settings.registry,
            settings.store,
            self.entry,
            trusted_keys=settings.trusted_keys,
            policy=settings.policy.governance,
            evaluation=evaluation,
            simulation=simulation,
            workdir=workdir,
        )
        verdict = {c.name: (c.met, c.detail if not c.met else "") for c in governance.conditions}
        unmet = [c.model_dump() for c in governance.unmet]
        self.record(
            "governance_checked",
            f"{self.key}:governance:{json_digest(verdict)}",
            governance.summary().splitlines()[0],
            {"passed": governance.passed, "unmet": unmet},
        )
        if not governance.passed:
            self.record(
                "promotion_refused",
                f"{self.key}:refused:{json_digest(verdict)}",
                governance.summary(),
                {"unmet": unmet},
            )
        return governance

    def refused(self, governance: GovernanceReport) -> PromotionResult:
        production = self.settings.registry.alias_entry(self.target, "production")
        return self.result(
            "refused",
            production.version if production else None,
            governance.summary(),
            governance=governance,
            webhook=self.notify(),
        )

    def start(self) -> Entry | None:
        """Take the target's promotion lock (exactly one promotion per target at a time) and
        point ``candidate`` at the entry; returns the production entry it is compared with."""
        reg, entry = self.settings.registry, self.entry
        production = reg.alias_entry(self.target, "production")
        reg.change_target(
            self.target,
            kind="promotion_started",
            actor=self.actor,
            reason=self.reason,
            idempotency_key=f"{self.key}:started",
            moves={"candidate": entry.id},
            entry_id=entry.id,
            promotion_id=self.pid,
            lock="acquire",
            payload={
                "version": entry.version,
                "production_version": production.version if production else None,
                "strategy": self.strategy or self.settings.policy.rollout.strategy,
            },
        )
        if reg.target_state(self.target).active_promotion != self.pid:
            ended = reg.events(promotion_id=self.pid, kinds=["promotion_aborted", "promotion_rolled_back"])
            by = f" by event #{ended[-1].id} ({ended[-1].kind} by {ended[-1].actor}: {ended[-1].reason})"
            raise RegistryError(
                f"promotion {self.pid} (key {self.key!r}) already ended"
                + (by if ended else "")
                + "; start a new promotion with a new idempotency key"
            )
        return production

    def plan(self, production: Entry | None) -> tuple[PromotionPlan, dict[str, str]]:
        """The plan, and the same plan rendered for production controllers (stored; recorded)."""
        plan = make_plan(
            self.settings.policy.rollout,
            target=self.target,
            model_name=self.entry.body.model_name,
            candidate_version=self.entry.version,
            production_version=production.version if production else None,
            strategy=self.strategy,
        )
        documents = store_plan_documents(self.settings, self.entry, plan, self.pid)
        self.record(
            "promotion_planned",
            f"{self.key}:planned",
            f"{plan.strategy}: " + " -> ".join(s.name for s in plan.steps),
            {"plan": json.loads(plan.model_dump_json()), "documents": documents},
        )
        return plan, documents

    def rolled_back(
        self,
        production: Entry,
        governance: GovernanceReport,
        rollout: RolloutReport,
        documents: dict[str, str],
    ) -> PromotionResult:
        """The guard rolled the canary back: release the lock, production untouched."""
        self.settings.registry.change_target(
            self.target,
            kind="promotion_rolled_back",
            actor="rollout-guard",
            reason=rollout.reason,
            idempotency_key=f"{self.key}:rolled-back",
            moves={"candidate": None},
            entry_id=self.entry.id,
            promotion_id=self.pid,
            lock="release",
            payload={
                "breach": rollout.breach.model_dump() if rollout.breach else None,
                "dropped_requests": rollout.dropped_requests,
            },
        )
        hooks = {"mining_request": self.hooks().request_mining(rollout)}
        return self.result(
            "rolled_back",
            production.version,
            f"rolled back automatically: {rollout.reason}; production stays {production.version}",
            governance=governance,
            rollout=rollout,
            documents=documents,
            hooks=hooks,
            webhook=self.notify(),
        )

    def deploy_refused(self, exc: DeployRefused) -> PromotionResult:
        """The pinned artifact did not verify: release the lock, production untouched."""
        reg = self.settings.registry
        reg.change_target(
            self.target,
            kind="promotion_aborted",
            actor="deploy-guard",
            reason=str(exc),
            idempotency_key=f"{self.key}:deploy-refused",
            moves={"candidate": None},
            entry_id=self.entry.id,
            promotion_id=self.pid,
            lock="release",
        )
        production = reg.alias_entry(self.target, "production")
        return self.result(
            "refused",
            production.version if production else None,
            f"deployment refused, nothing served: {exc}",
            webhook=self.notify(),
        )

    def finalize(self) -> None:
        """Production -> the entry, previous -> rollback, lock released: one transaction."""
        reg = self.settings.registry
        finalize_aliases(
            reg,
            self.entry,
            promotion_id=self.pid,
            actor=self.actor,
            reason=self.reason,
            idempotency_key=f"{self.key}:completed",
            expected_version=reg.target_state(self.target).version,
        )

    def completed(
        self,
        governance: GovernanceReport | None,
        rollout: RolloutReport | None,
        documents: dict[str, str],
    ) -> PromotionResult:
        """After finalize (now or in an earlier run): the hooks, unless production moved on."""
        reg, entry, target = self.settings.registry, self.entry, self.target
        completed = reg.event_by_key(f"{self.key}:completed")
        assert completed is not None
        now_production = reg.alias_entry(target, "production")
        if now_production is None or now_production.id != entry.id:
            return self.result(
                "promoted",
                completed.payload.get("previous_production"),
                f"promotion {self.pid} completed earlier (event #{completed.id}); production on {target} has "
                f"since moved to {now_production.version if now_production else 'none'}: promote again with a new key",
            )
        previous_id = completed.payload.get("previous_production_entry")
        previous = reg.get_entry(previous_id) if previous_id else None
        hooks = self.hooks().after_promotion(previous, self.reason, governance, rollout, documents)
        self.crash("after_hooks")
        return self.result(
            "promoted",
            previous.version if previous else None,
            f"{entry.version} is production on {target}"
            + (f"; {previous.version} is the rollback" if previous else ""),
            governance=governance,
            rollout=rollout,
            documents=documents,
            hooks=hooks,
            webhook=self.notify(),
        )

    def hooks(self) -> PromotionHooks:
        return PromotionHooks(self.settings, self.entry, self.pid, self.key, self.actor)


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
    p = _Promotion(settings, entry, actor, reason, idempotency_key, strategy, crash_at)
    reg = settings.registry
    if evaluation is None and simulation is None:
        evaluation, simulation = latest_verdicts(reg, entry)
    workdir = Path(settings.workdir or tempfile.mkdtemp(prefix="promotion-")) / p.pid
    workdir.mkdir(parents=True, exist_ok=True)
    governance: GovernanceReport | None = None
    rollout: RolloutReport | None = None
    documents: dict[str, str] = {}
    warnings: list[str] = []
    if reg.event_by_key(f"{idempotency_key}:completed") is None:
        governance = p.check_governance(evaluation, simulation, workdir / "governance")
        if not governance.passed:
            return p.refused(governance)
        production = p.start()
        p.crash("after_start")
        plan, documents = p.plan(production)
        # The rollout, for real (skipped for a first deployment: no production to compare).
        try:
            if production is None:
                # No canary, but what goes to production is still pulled and verified first.
                deployed = deploy_entry(settings, entry, workdir / "first-deployment" / "production")
                warnings.extend(deployed.warnings)
                p.record(
                    "rollout_skipped",
                    f"{idempotency_key}:rollout:skipped",
                    f"no production version on {entry.target}: first deployment",
                    {"deployed": deployed.summary()},
                )
            else:
                rollout = run_rollout(
                    settings,
                    entry,
                    production,
                    plan,
                    traffic,
                    runner=runner,
                    record=p.record,
                    key=idempotency_key,
                    pid=p.pid,
                    crash=p.crash,
                    warnings=warnings,
                )
        except DeployRefused as exc:
            return p.deploy_refused(exc)
        if rollout is not None:
            report_key = f"registry/promotions/{p.pid}/rollout_report.json"
            documents["rollout_report.json"] = settings.store.put_bytes(
                report_key, rollout.model_dump_json(indent=2).encode()
            ).uri
            if rollout.outcome == "rolled_back" and production is not None:
                return p.rolled_back(production, governance, rollout, documents)
        p.crash("after_rollout")
        p.finalize()
        p.crash("after_finalize")
    result = p.completed(governance, rollout, documents)
    return result.model_copy(update={"warnings": warnings}) if warnings else result


def rollback(
    settings: PromotionSettings, target: str, *, actor: str, reason: str, idempotency_key: str
) -> PromotionResult:
    """Reverse promotion. With a promotion in flight (e.g. one that crashed) it is aborted:
    its lock released, production untouched. Otherwise production moves back to the
    ``rollback`` entry, after its artifacts re-hash to the sha256 the entry pins and its pack
    (if it has one) verifies against the trust root."""
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
            webhook=deliver(settings.notifier, reg),
        )
    back = reg.alias_entry(target, "rollback")
    if back is None and reg.event_by_key(idempotency_key) is None:
        raise RegistryError(f"{target}: no rollback version recorded, nothing to roll back to")
    warnings: list[str] = []
    if back is not None and not back.body.adopted:
        # Production's repository is refilled from the pinned digest, verified before it serves.
        base = Path(settings.workdir or tempfile.gettempdir()) / "rollback" / target.replace("/", "-")
        try:
            warnings = deploy_entry(settings, back, base / "production").warnings
        except DeployRefused as exc:
            raise RegistryError(f"refusing to roll back: {exc}") from exc
    elif back is not None:
        with tempfile.TemporaryDirectory(prefix="rollback-verify-") as tmp:
            check = verify_artifacts(settings.store, back.body, settings.trusted_keys, Path(tmp))
        if not check.ok:
            problems = check.hash_problems + check.signature_problems
            raise RegistryError(
                f"{back.ref}: refusing to roll back to artifacts that no longer verify: {'; '.join(problems[:3])}"
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
        webhook=deliver(settings.notifier, reg),
        warnings=warnings,
    )
