"""Approvals: the four roles' decisions on registered entries, and the security role's written
waiver of the vulnerability gate. Used by the ``approve`` job and ``adas-registry approve``."""

from dataclasses import dataclass
from typing import Literal

from adas.registry.models import Entry, Event, RegistryError
from adas.registry.store import RegistryStore


def entries_of_version(
    registry: RegistryStore, version: str, *, model_name: str | None = None, target: str | None = None
) -> list[Entry]:
    """Every entry of ``version`` (on ``target``, or every target when it is None or ``all``);
    exactly one model's."""
    entries = registry.entries(
        version=version,
        model_name=model_name or None,
        target=None if target in (None, "all") else target,
    )
    if not entries:
        raise RegistryError(f"no registry entry for version {version!r} ({target or 'all'})")
    if len({e.body.model_name for e in entries}) > 1:
        raise RegistryError(f"version {version} exists for several models: name the model")
    return entries


@dataclass(frozen=True)
class Approval:
    entry: Entry
    event: Event
    waiver: Event | None = None
    amber: Event | None = None


def approve_entries(
    registry: RegistryStore,
    entries: list[Entry],
    *,
    role: str,
    actor: str,
    reason: str,
    decision: Literal["approved", "rejected"] = "approved",
    waive_vulnerabilities: str = "",
    accept_amber: str = "",
) -> list[Approval]:
    """Record ``role``'s decision on every entry, with the security role's waiver and the
    acceptance of amber gate verdicts (``accept_amber``: the quoted intervals) when given."""
    if waive_vulnerabilities and role != "security":
        raise RegistryError("only the security role can waive the vulnerability gate")
    if accept_amber and decision != "approved":
        raise RegistryError("an amber verdict is accepted by an approval, not a rejection")
    approvals = []
    for e in entries:
        event = registry.approve(e.id, role, actor=actor, reason=reason, decision=decision)
        waiver = None
        if waive_vulnerabilities:
            waiver = registry.waive_vulnerabilities(e.id, actor=actor, justification=waive_vulnerabilities)
        amber = None
        if accept_amber:
            amber = registry.accept_amber(e.id, role=role, actor=actor, quote=accept_amber, reason=reason)
        approvals.append(Approval(e, event, waiver, amber))
    return approvals
