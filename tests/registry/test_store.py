"""The registry of truth on SQLite and PostgreSQL: immutability (in the database too),
aliases through recorded events only, idempotency, point-in-time history, racing promotions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from adas.registry.models import RegistryError
from adas.registry.store import (
    IdempotencyConflict,
    ImmutableEntryError,
    PromotionConflict,
    RegistryStore,
)
from tests.registry.factories import make_body


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _db_rejects(store: RegistryStore, sql: str, params: dict | None = None) -> str:
    with pytest.raises(sa.exc.DBAPIError) as info, store.engine.begin() as conn:
        conn.execute(sa.text(sql), params or {})
    return str(info.value.orig)


def test_entries_are_append_only_in_code_and_in_the_database(registry_url: str) -> None:
    store = RegistryStore(registry_url)
    entry, created = store.register(make_body("1.0.0"), "# card", actor="ci")
    assert created and entry.version == "1.0.0" and entry.target == "orin/int8"
    # Identical content again: the same entry, nothing new recorded.
    again, created_again = store.register(make_body("1.0.0"), "# card", actor="ci")
    assert not created_again and again.id == entry.id
    assert len(store.events(kinds=["registered"])) == 1
    # Same version and target, different content: refused, with what to do instead.
    with pytest.raises(ImmutableEntryError, match=r"already registered .* new\s+semantic version"):
        store.register(make_body("1.0.0", ap=0.9), "# card", actor="ci")
    # Going around the code is refused by the database itself.
    assert "append-only" in _db_rejects(store, "UPDATE registry_entries SET version = '9.9.9'")
    assert "append-only" in _db_rejects(store, "DELETE FROM registry_entries")
    assert "append-only" in _db_rejects(store, "UPDATE registry_events SET actor = 'mallory'")
    assert "append-only" in _db_rejects(store, "DELETE FROM registry_events")
    assert store.get_entry(entry.id).body == make_body("1.0.0")
    assert store.consistency_problems() == []


def test_aliases_move_only_through_recorded_events(registry_url: str) -> None:
    store = RegistryStore(registry_url)
    a, _ = store.register(make_body("1.0.0"), "# a", actor="ci")
    b, _ = store.register(make_body("1.1.0"), "# b", actor="ci")
    events = store.change_target(
        "orin/int8",
        kind="adopted",
        actor="alice",
        reason="first production model",
        idempotency_key="adopt-1",
        moves={"production": a.id},
        entry_id=a.id,
    )
    assert [e.kind for e in events] == ["adopted", "alias_moved"]
    move = events[1]
    assert (move.alias, move.from_entry_id, move.to_entry_id) == ("production", None, a.id)
    assert move.actor == "alice" and move.reason == "first production model" and move.at.tzinfo is not None
    assert store.aliases("orin/int8")["production"].id == a.id
    assert store.target_state("orin/int8").version == 1
    # Writing the alias or target rows directly, without the event, is refused by the database.
    msg = _db_rejects(
        store,
        "UPDATE registry_aliases SET entry_id = :b WHERE target = 'orin/int8' AND alias = 'production'",
        {"b": b.id},
    )
    assert "alias moves only together with the alias_moved event" in msg
    msg = _db_rejects(
        store,
        "INSERT INTO registry_aliases (target, alias, entry_id, event_id) VALUES ('t4/fp16', 'production', :b, :e)",
        {"b": b.id, "e": move.id},
    )
    assert "alias_moved event" in msg
    assert "version + 1" in _db_rejects(store, "UPDATE registry_targets SET version = 7")
    assert "DELETE is not allowed" in _db_rejects(store, "DELETE FROM registry_aliases")
    assert "DELETE is not allowed" in _db_rejects(store, "DELETE FROM registry_targets")
    assert store.aliases("orin/int8")["production"].id == a.id
    with pytest.raises(RegistryError, match="unknown alias"):
        store.change_target(
            "orin/int8", kind="x", actor="a", reason="r", idempotency_key="k", moves={"prod": 1}
        )
    with pytest.raises(RegistryError, match="actor"):
        store.move_alias("orin/int8", "staging", b.id, actor=" ", reason="r", idempotency_key="k2")
    assert store.consistency_problems() == []


def test_idempotency_key_replays_instead_of_recording_twice(registry_url: str) -> None:
    store = RegistryStore(registry_url)
    a, _ = store.register(make_body("1.0.0"), "# a", actor="ci")
    b, _ = store.register(make_body("1.1.0"), "# b", actor="ci")
    first = store.move_alias(
        "orin/int8", "staging", a.id, actor="ci", reason="registered", idempotency_key="k1"
    )
    again = store.move_alias(
        "orin/int8", "staging", a.id, actor="ci", reason="registered", idempotency_key="k1"
    )
    assert [e.id for e in again] == [e.id for e in first]
    assert len(store.events(kinds=["alias_moved"])) == 1
    # The same key for a different request is a caller bug, reported with the first use.
    with pytest.raises(IdempotencyConflict, match=r"'k1' was already used by event"):
        store.move_alias("orin/int8", "staging", b.id, actor="ci", reason="registered", idempotency_key="k1")
    approval = store.approve(a.id, "safety", actor="sam", reason="reviewed sim report")
    assert store.approve(a.id, "safety", actor="sam", reason="reviewed sim report").id == approval.id
    assert set(store.approvals(a.id)) == {"safety"}
    store.approve(a.id, "safety", actor="sam", reason="found an issue", decision="rejected")
    assert store.approvals(a.id) == {}
    with pytest.raises(RegistryError, match="role 'legal' is not one of"):
        store.approve(a.id, "legal", actor="x", reason="y")


def test_history_answers_which_version_was_production_on_a_date(registry_url: str) -> None:
    clock = Clock(datetime(2025, 3, 1, 9, 0, tzinfo=UTC))
    store = RegistryStore(registry_url, clock=clock)
    v1, _ = store.register(make_body("1.0.0"), "# 1", actor="ci")
    v2, _ = store.register(make_body("1.1.0"), "# 2", actor="ci")
    store.change_target(
        "orin/int8",
        kind="adopted",
        actor="ops",
        reason="baseline",
        idempotency_key="h1",
        moves={"production": v1.id},
    )
    clock.now = datetime(2025, 3, 10, 14, 0, tzinfo=UTC)
    store.change_target(
        "orin/int8",
        kind="promotion_completed",
        actor="alice",
        reason="canary green",
        idempotency_key="h2",
        moves={"production": v2.id, "rollback": v1.id},
        expected_version=1,
    )
    clock.now = datetime(2025, 3, 12, 8, 30, tzinfo=UTC)
    store.change_target(
        "orin/int8",
        kind="rollback",
        actor="bob",
        reason="false braking in fleet",
        idempotency_key="h3",
        moves={"production": v1.id, "rollback": None},
    )
    day = timedelta(days=1)
    assert store.history("orin/int8", at=datetime(2025, 2, 28, tzinfo=UTC)).current is None
    assert store.history("orin/int8", at=datetime(2025, 3, 5, tzinfo=UTC)).version == "1.0.0"
    assert store.history("orin/int8", at=datetime(2025, 3, 10, 14, 0, tzinfo=UTC)).version == "1.1.0"
    assert store.history("orin/int8", at=datetime(2025, 3, 11, tzinfo=UTC) + day / 2).version == "1.1.0"
    assert store.history("orin/int8", at=datetime(2025, 3, 13, tzinfo=UTC)).version == "1.0.0"
    full = store.history("orin/int8")
    assert [(c.actor, c.to_entry_id) for c in full.changes] == [
        ("ops", v1.id),
        ("alice", v2.id),
        ("bob", v1.id),
    ]
    assert store.history("orin/int8", alias="rollback").current is None
    assert (
        store.history("orin/int8", at=datetime(2025, 3, 11, tzinfo=UTC), alias="rollback").version == "1.0.0"
    )
    assert store.history("t4/fp16").changes == []
    assert store.consistency_problems() == []


def test_stale_expected_version_is_a_conflict_naming_the_winner(registry_url: str) -> None:
    store = RegistryStore(registry_url)
    a, _ = store.register(make_body("1.0.0"), "# a", actor="ci")
    b, _ = store.register(make_body("1.1.0"), "# b", actor="ci")
    store.change_target(
        "orin/int8",
        kind="adopted",
        actor="ops",
        reason="baseline",
        idempotency_key="s1",
        moves={"production": a.id},
    )
    with pytest.raises(PromotionConflict, match=r"version 0 -> 1\) by event #\d+ \(adopted by ops"):
        store.change_target(
            "orin/int8",
            kind="promotion_completed",
            actor="alice",
            reason="late",
            idempotency_key="s2",
            moves={"production": b.id},
            expected_version=0,
        )
    assert store.aliases("orin/int8")["production"].id == a.id
    assert store.event_by_key("s2") is None


def _race(n: int, work) -> list[object]:  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def _stall_after_reading_the_target(
    store: RegistryStore, barrier: threading.Barrier, met: list[bool]
) -> None:
    """Hold every racer after it has read the target's version and before it writes anything,
    until all have read it: the race then really happens inside the database (PostgreSQL;
    SQLite serializes writers with BEGIN IMMEDIATE anyway)."""

    @sa.event.listens_for(store.engine, "before_cursor_execute")
    def _hold(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "FOR UPDATE" in statement.upper() and "registry_aliases" in statement and not met_by(conn):
            conn.info["held"] = True
            try:
                barrier.wait(timeout=5)
                met.append(True)
            except threading.BrokenBarrierError:
                met.append(False)

    def met_by(conn) -> bool:  # type: ignore[no-untyped-def]
        return bool(conn.info.get("held"))


def test_racing_promotions_exactly_one_wins(registry_url: str) -> None:
    setup = RegistryStore(registry_url)
    base, _ = setup.register(make_body("1.0.0"), "# base", actor="ci")
    contenders = [setup.register(make_body(f"1.{i + 1}.0"), "# c", actor="ci")[0] for i in range(2)]
    setup.change_target(
        "orin/int8",
        kind="adopted",
        actor="ops",
        reason="baseline",
        idempotency_key="r0",
        moves={"production": base.id},
    )
    version = setup.target_state("orin/int8").version
    # Real concurrent connections: one engine (pool) per racer.
    stores = [RegistryStore(registry_url, create=False) for _ in contenders]
    met: list[bool] = []
    if setup.dialect == "postgresql":
        barrier = threading.Barrier(len(stores))
        for s in stores:
            _stall_after_reading_the_target(s, barrier, met)

    def promote(i: int) -> object:
        return stores[i].change_target(
            "orin/int8",
            kind="promotion_completed",
            actor=f"engineer-{i}",
            reason="canary green",
            idempotency_key=f"race-{i}",
            moves={"production": contenders[i].id, "rollback": base.id},
            expected_version=version,
        )

    results = _race(len(stores), promote)
    if setup.dialect == "postgresql":
        # Both transactions had read version N and were about to write it at the same time.
        assert met == [True, True]
    winners = [r for r in results if isinstance(r, list)]
    losers = [r for r in results if isinstance(r, PromotionConflict)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "re-read the registry" in str(losers[0])
    winning_entry = next(e.to_entry_id for e in winners[0] if e.alias == "production")
    assert setup.aliases("orin/int8")["production"].id == winning_entry
    moves = setup.events(kinds=["alias_moved"], target="orin/int8")
    assert len([m for m in moves if m.alias == "production"]) == 2  # the baseline and the one winner
    assert setup.target_state("orin/int8").version == version + 1
    assert setup.consistency_problems() == []
    for s in stores:
        s.dispose()


def test_promotion_lock_many_contenders_one_holder(registry_url: str) -> None:
    setup = RegistryStore(registry_url)
    entry, _ = setup.register(make_body("2.0.0"), "# e", actor="ci")
    stores = [RegistryStore(registry_url, create=False) for _ in range(4)]

    def acquire(i: int) -> object:
        return stores[i].change_target(
            "orin/int8",
            kind="promotion_started",
            actor=f"bot-{i}",
            reason="start",
            idempotency_key=f"lock-{i}",
            moves={"candidate": entry.id},
            promotion_id=f"p{i}",
            lock="acquire",
        )

    results = _race(len(stores), acquire)
    winners = [i for i, r in enumerate(results) if isinstance(r, list)]
    assert len(winners) == 1, results
    assert all(isinstance(r, PromotionConflict) for i, r in enumerate(results) if i != winners[0])
    assert setup.target_state("orin/int8").active_promotion == f"p{winners[0]}"
    # While it holds the target, nobody else moves production.
    with pytest.raises(PromotionConflict, match="in flight"):
        setup.change_target(
            "orin/int8",
            kind="rollback",
            actor="x",
            reason="y",
            idempotency_key="z",
            moves={"production": entry.id},
        )
    # Staging/candidate bookkeeping does not need the lock.
    setup.move_alias("orin/int8", "staging", entry.id, actor="ci", reason="registered", idempotency_key="st")
    assert setup.consistency_problems() == []
    for s in stores:
        s.dispose()
