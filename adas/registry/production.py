"""Moving a target's production alias on request: promote a registered version (governance, local
canary, finalize, hooks) or roll production back.

The use-case behind the ``production_alias`` asset (jobs ``promote_candidate`` and ``rollback``)
and ``adas-registry promote`` / ``rollback``, with the default idempotency keys both use.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from adas.registry.aliases import AliasView, alias_view
from adas.registry.config import Strategy
from adas.registry.models import AliasRef, Entry, RegistryError
from adas.registry.promotion import PromotionResult, promote, rollback
from adas.registry.replay import Traffic
from adas.registry.settings import PromotionSettings
from adas.registry.store import RegistryStore


class AliasMoveRequest(BaseModel):
    """Who asks what of a target's production alias, and why (recorded with every event)."""

    action: Literal["promote", "rollback"]
    target: str
    actor: str
    reason: str
    # promote: the registered version (of ``model_name``) to promote
    model_name: str = ""
    version: str = ""
    # retries with the same key do nothing twice; default: one per action, target and version
    idempotency_key: str = ""
    strategy: Strategy | None = None


@dataclass(frozen=True)
class AliasMove:
    request: AliasMoveRequest
    result: PromotionResult
    key: str
    value: AliasRef
    view: AliasView
    # set when a promotion's canary was rolled back automatically, or a deployment warned
    warning: str | None = None


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


def rollback_key(registry: RegistryStore, target: str) -> str:
    """``rollback:<target>:<production version>``: one rollback per production version."""
    production = registry.alias_entry(target, "production")
    return f"rollback:{target}:{production.version if production else 'none'}"


def move_production_alias(
    settings: PromotionSettings,
    request: AliasMoveRequest,
    *,
    traffic: Traffic | Callable[[], Traffic] | None = None,
    entry: Entry | None = None,
) -> AliasMove:
    """Promote (``entry``, or the request's registered version) or roll back, then read the
    target's aliases back. A refusal is a result (``status == "refused"``); conflicts,
    unknown versions and missing actor or reason raise :class:`RegistryError`."""
    if not request.actor.strip() or not request.reason.strip():
        raise RegistryError("actor and reason are required: every registry event records who and why")
    reg, target = settings.registry, request.target
    warning = None
    if request.action == "rollback":
        key = request.idempotency_key or rollback_key(reg, target)
        result = rollback(settings, target, actor=request.actor, reason=request.reason, idempotency_key=key)
    else:
        entry = entry or reg.find_entry(request.model_name, request.version, target)
        key = request.idempotency_key or default_promotion_key(reg, entry)
        result = promote(
            settings,
            entry,
            actor=request.actor,
            reason=request.reason,
            idempotency_key=key,
            strategy=request.strategy,
            traffic=traffic,
        )
        warning = result.message if result.status == "rolled_back" else None
    if result.warnings:  # a moved tag: the pinned digest was deployed regardless
        warning = "; ".join([*([warning] if warning else []), *result.warnings])
    view = alias_view(reg, target)
    prod, back = view.aliases["production"], view.aliases["rollback"]
    value = AliasRef(
        target=target,
        action=request.action,
        outcome=result.status,
        production_version=prod.version if prod else None,
        production_entry=prod.id if prod else None,
        rollback_version=back.version if back else None,
        promotion_id=result.promotion_id,
        message=result.message,
    )
    return AliasMove(request=request, result=result, key=key, value=value, view=view, warning=warning)
