"""Alias moves of a promotion's end: finalize (production -> the entry, previous -> rollback)
and reverse (production back to the rollback entry), each one recorded transaction."""

from dataclasses import dataclass

from adas.registry.models import Entry, Event, RegistryError
from adas.registry.store import RegistryStore


def finalize_aliases(
    registry: RegistryStore,
    entry: Entry,
    *,
    promotion_id: str,
    actor: str,
    reason: str,
    idempotency_key: str,
    expected_version: int | None,
) -> list[Event]:
    """One transaction: production -> the entry, the previous production -> rollback, the
    candidate alias cleared, the promotion lock released. A replay changes nothing."""
    target = entry.target
    previous = registry.alias_entry(target, "production")
    done = registry.events_for_key(idempotency_key)
    if done:
        return done
    moves: dict[str, int | None] = {"production": entry.id, "candidate": None}
    if previous is not None and previous.id != entry.id:
        moves["rollback"] = previous.id
    return registry.change_target(
        target,
        kind="promotion_completed",
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        moves=moves,
        entry_id=entry.id,
        expected_version=expected_version,
        promotion_id=promotion_id,
        lock="release",
        payload={
            "version": entry.version,
            "previous_production": previous.version if previous else None,
            "previous_production_entry": previous.id if previous else None,
        },
    )


def rollback_aliases(
    registry: RegistryStore, target: str, *, actor: str, reason: str, idempotency_key: str
) -> list[Event]:
    """Reverse promotion: production goes back to the ``rollback`` entry; ``rollback`` is
    cleared (the version rolled back from keeps its entry and history, no alias)."""
    done = registry.events_for_key(idempotency_key)
    if done:
        return done
    aliases = registry.aliases(target)
    back, current = aliases["rollback"], aliases["production"]
    if back is None:
        raise RegistryError(f"{target}: no rollback version recorded, nothing to roll back to")
    return registry.change_target(
        target,
        kind="rollback",
        actor=actor,
        reason=reason,
        idempotency_key=idempotency_key,
        moves={"production": back.id, "rollback": None},
        entry_id=back.id,
        payload={"from_version": current.version if current else None, "to_version": back.version},
    )


@dataclass(frozen=True)
class AliasView:
    """A target's aliases now and its latest alias moves (oldest first), with the version of
    every entry of the target (moves name entries by id)."""

    target: str
    aliases: dict[str, Entry | None]
    moves: list[Event]
    versions: dict[int, str]

    def version_of(self, entry_id: int | None) -> str:
        return self.versions.get(entry_id or -1, "-")


def alias_view(registry: RegistryStore, target: str, moves: int = 12) -> AliasView:
    return AliasView(
        target=target,
        aliases=registry.aliases(target),
        moves=registry.events(target=target, kinds=["alias_moved"])[-moves:],
        versions=entry_versions(registry, target),
    )


def entry_versions(registry: RegistryStore, target: str) -> dict[int, str]:
    """``entry id -> version`` of every entry registered for ``target``."""
    return {e.id: e.version for e in registry.entries(target=target)}
