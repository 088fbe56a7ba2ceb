"""The registry of truth: one SQLAlchemy 2 schema on SQLite (local) and PostgreSQL (production).

Tables
------
``registry_entries``  append-only. One row per model version and deployment target, with its
                      immutable pointers and summaries as canonical JSON and that JSON's sha256.
``registry_events``   append-only journal: registrations, approvals, waivers, alias moves,
                      promotion steps, hooks. Every row has an actor, a time, a reason and a
                      unique idempotency key.
``registry_aliases``  ``(target, alias) -> entry``; a row may only be written together with the
                      ``alias_moved`` event it names (checked by a trigger).
``registry_targets``  per target: the optimistic-concurrency ``version`` of its deployment state
                      (production / rollback aliases and the promotion lock) and the promotion
                      in flight, if any; every change names the event that caused it.
``registry_webhook_deliveries``  append-only delivery attempts of events to webhooks.

Immutability is enforced by the database itself, not only by this code: triggers (SQLite
``RAISE(ABORT)``, PostgreSQL plpgsql) reject UPDATE and DELETE (and TRUNCATE) on entries,
events and deliveries, DELETE on aliases and targets, an alias write without its event, and a
target change that does not bump the version by one and name a new event.

Concurrency: a change to a target's deployment state reads the target's version and writes
``UPDATE ... SET version = version + 1 WHERE version = <read>``; of two racing promotions
exactly one update matches, the other raises :class:`PromotionConflict`. A request replayed with
the same idempotency key returns the events of the first one and records nothing new.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adas.cell import Cell
from adas.registry.models import (
    ALIASES,
    ROLES,
    AliasState,
    Entry,
    EntryBody,
    Event,
    History,
    RegistryError,
    TargetState,
    canonical_json,
    semver_key,
)


class PromotionConflict(RegistryError):
    """Another change won the race for this target (or holds it); re-read and decide again."""


class IdempotencyConflict(RegistryError):
    """An idempotency key was reused for a different request."""


class ImmutableEntryError(RegistryError):
    """An entry with this model, version and target exists with different content."""


class EntryNotFound(RegistryError, LookupError):
    pass


DEPLOYMENT_ALIASES = ("production", "rollback")
_RETRIES = 8

metadata = sa.MetaData()

entries = sa.Table(
    "registry_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model_name", sa.String(100), nullable=False),
    sa.Column("task", sa.String(100), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("major", sa.Integer, nullable=False),
    sa.Column("minor", sa.Integer, nullable=False),
    sa.Column("patch", sa.Integer, nullable=False),
    sa.Column("device", sa.String(64), nullable=False),
    sa.Column("precision", sa.String(16), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("model_card", sa.Text, nullable=False),
    sa.UniqueConstraint("model_name", "version", "device", "precision", name="uq_entry_version_target"),
)

events = sa.Table(
    "registry_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("uid", sa.String(32), nullable=False, unique=True),
    sa.Column("idempotency_key", sa.String(300), nullable=False, unique=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("target", sa.String(100), nullable=True),
    sa.Column("alias", sa.String(16), nullable=True),
    sa.Column("entry_id", sa.Integer, sa.ForeignKey("registry_entries.id"), nullable=True),
    sa.Column("from_entry_id", sa.Integer, sa.ForeignKey("registry_entries.id"), nullable=True),
    sa.Column("to_entry_id", sa.Integer, sa.ForeignKey("registry_entries.id"), nullable=True),
    sa.Column("promotion_id", sa.String(100), nullable=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Index("ix_events_target_alias_at", "target", "alias", "at"),
    sa.Index("ix_events_entry", "entry_id"),
    sa.Index("ix_events_promotion", "promotion_id"),
)

aliases = sa.Table(
    "registry_aliases",
    metadata,
    sa.Column("target", sa.String(100), primary_key=True),
    sa.Column("alias", sa.String(16), primary_key=True),
    sa.Column("entry_id", sa.Integer, sa.ForeignKey("registry_entries.id"), nullable=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("registry_events.id"), nullable=False),
)

targets = sa.Table(
    "registry_targets",
    metadata,
    sa.Column("target", sa.String(100), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("active_promotion", sa.String(100), nullable=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("registry_events.id"), nullable=False),
)

deliveries = sa.Table(
    "registry_webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.Integer, sa.ForeignKey("registry_events.id"), nullable=False),
    sa.Column("endpoint", sa.String(500), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("at", sa.DateTime(), nullable=False),
    sa.Index("ix_deliveries_endpoint_event", "endpoint", "event_id"),
)

_APPEND_ONLY = ("registry_entries", "registry_events", "registry_webhook_deliveries")
_NO_DELETE = ("registry_aliases", "registry_targets")

# --------------------------------------------------------------------------- triggers

_ALIAS_EVENT_OK = (
    "EXISTS (SELECT 1 FROM registry_events e WHERE e.id = NEW.event_id AND e.kind = 'alias_moved' "
    "AND e.target = NEW.target AND e.alias = NEW.alias AND e.to_entry_id IS NOT DISTINCT FROM NEW.entry_id)"
)
_TARGET_EVENT_OK = (
    "EXISTS (SELECT 1 FROM registry_events e WHERE e.id = NEW.event_id AND e.target = NEW.target)"
)
_MSG_ALIAS = "an alias moves only together with the alias_moved event that records it"
_MSG_TARGET = "a target changes only by version + 1 and together with the event that records it"


def _sqlite_ddl() -> list[str]:
    ddl = []
    for table in _APPEND_ONLY:
        for op in ("UPDATE", "DELETE"):
            ddl.append(
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {op} is not allowed'); END"
            )
    for table in _NO_DELETE:
        ddl.append(
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table}: DELETE is not allowed, record a move instead'); END"
        )
    alias_ok = _ALIAS_EVENT_OK.replace("IS NOT DISTINCT FROM", "IS")
    ddl += [
        "CREATE TRIGGER IF NOT EXISTS registry_aliases_insert_needs_event BEFORE INSERT ON registry_aliases "
        f"WHEN NOT {alias_ok} BEGIN SELECT RAISE(ABORT, '{_MSG_ALIAS}'); END",
        "CREATE TRIGGER IF NOT EXISTS registry_aliases_update_needs_event BEFORE UPDATE ON registry_aliases "
        f"WHEN NEW.event_id IS OLD.event_id OR NEW.target IS NOT OLD.target OR NEW.alias IS NOT OLD.alias "
        f"OR NOT {alias_ok} BEGIN SELECT RAISE(ABORT, '{_MSG_ALIAS}'); END",
        "CREATE TRIGGER IF NOT EXISTS registry_targets_insert_needs_event BEFORE INSERT ON registry_targets "
        f"WHEN NEW.version <> 1 OR NOT {_TARGET_EVENT_OK} BEGIN SELECT RAISE(ABORT, '{_MSG_TARGET}'); END",
        "CREATE TRIGGER IF NOT EXISTS registry_targets_update_needs_event BEFORE UPDATE ON registry_targets "
        "WHEN NEW.version <> OLD.version + 1 OR NEW.event_id IS OLD.event_id OR NEW.target IS NOT OLD.target "
        f"OR NOT {_TARGET_EVENT_OK} BEGIN SELECT RAISE(ABORT, '{_MSG_TARGET}'); END",
    ]
    return ddl


def _pg_ddl() -> list[str]:
    ddl = [
        """CREATE OR REPLACE FUNCTION registry_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$""",
        """CREATE OR REPLACE FUNCTION registry_reject_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '%: % is not allowed, record a move instead', TG_TABLE_NAME, TG_OP USING ERRCODE = 'restrict_violation';
END $$""",
        f"""CREATE OR REPLACE FUNCTION registry_alias_needs_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND (NEW.event_id = OLD.event_id OR NEW.target <> OLD.target OR NEW.alias <> OLD.alias) THEN
    RAISE EXCEPTION '{_MSG_ALIAS}' USING ERRCODE = 'restrict_violation';
  END IF;
  IF NOT {_ALIAS_EVENT_OK} THEN
    RAISE EXCEPTION '{_MSG_ALIAS}' USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NEW;
END $$""",
        f"""CREATE OR REPLACE FUNCTION registry_target_needs_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' AND NEW.version <> 1 THEN
    RAISE EXCEPTION '{_MSG_TARGET}' USING ERRCODE = 'restrict_violation';
  END IF;
  IF TG_OP = 'UPDATE' AND (NEW.version <> OLD.version + 1 OR NEW.event_id = OLD.event_id OR NEW.target <> OLD.target) THEN
    RAISE EXCEPTION '{_MSG_TARGET}' USING ERRCODE = 'restrict_violation';
  END IF;
  IF NOT {_TARGET_EVENT_OK} THEN
    RAISE EXCEPTION '{_MSG_TARGET}' USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN NEW;
END $$""",
    ]
    for table in _APPEND_ONLY:
        ddl += [
            f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}",
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION registry_reject_change()",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION registry_reject_change()",
        ]
    for table in _NO_DELETE:
        ddl += [
            f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}",
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION registry_reject_delete()",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION registry_reject_delete()",
        ]
    ddl += [
        "DROP TRIGGER IF EXISTS registry_aliases_needs_event ON registry_aliases",
        "CREATE TRIGGER registry_aliases_needs_event BEFORE INSERT OR UPDATE ON registry_aliases "
        "FOR EACH ROW EXECUTE FUNCTION registry_alias_needs_event()",
        "DROP TRIGGER IF EXISTS registry_targets_needs_event ON registry_targets",
        "CREATE TRIGGER registry_targets_needs_event BEFORE INSERT OR UPDATE ON registry_targets "
        "FOR EACH ROW EXECUTE FUNCTION registry_target_needs_event()",
    ]
    return ddl


# --------------------------------------------------------------------------- engine


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite gets WAL, foreign keys, a busy timeout and BEGIN IMMEDIATE
    (writers queue on the database lock instead of failing half-way through a transaction)."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _naive_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RegistryStore:
    """The registry API; ``clock`` is injectable so tests can write history at chosen times."""

    def __init__(
        self,
        url_or_engine: str | Engine,
        *,
        clock: Callable[[], datetime] = _utcnow,
        create: bool = True,
    ) -> None:
        self.engine = make_engine(url_or_engine) if isinstance(url_or_engine, str) else url_or_engine
        self.clock = clock
        if create:
            self.create_schema()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    def create_schema(self) -> None:
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                # Concurrent first starts (several workers) must not race on CREATE TABLE.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242018)"))
            metadata.create_all(conn)
            # Straight to the DBAPI cursor: the trigger bodies hold '%' placeholders that a
            # parameter-style driver call would try to interpolate.
            cursor = conn.connection.cursor()
            try:
                for stmt in _pg_ddl() if self.dialect == "postgresql" else _sqlite_ddl():
                    cursor.execute(stmt)
            finally:
                cursor.close()

    # ------------------------------------------------------------------ helpers
    def _now(self) -> datetime:
        return _naive_utc(self.clock())

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self.engine.begin() as conn:
            yield conn

    @staticmethod
    def _entry(row: Any) -> Entry:
        return Entry(
            id=row.id,
            created_at=_aware(row.created_at),
            created_by=row.created_by,
            digest=row.digest,
            body=EntryBody.model_validate_json(row.body),
            model_card=row.model_card,
        )

    @staticmethod
    def _event(row: Any) -> Event:
        return Event(
            id=row.id,
            uid=row.uid,
            idempotency_key=row.idempotency_key,
            kind=row.kind,
            target=row.target,
            alias=row.alias,
            entry_id=row.entry_id,
            from_entry_id=row.from_entry_id,
            to_entry_id=row.to_entry_id,
            promotion_id=row.promotion_id,
            actor=row.actor,
            reason=row.reason,
            at=_aware(row.at),
            payload=json.loads(row.payload),
        )

    def _insert_event(
        self,
        conn: Connection,
        *,
        key: str,
        kind: str,
        actor: str,
        reason: str,
        at: datetime,
        target: str | None = None,
        alias: str | None = None,
        entry_id: int | None = None,
        from_entry_id: int | None = None,
        to_entry_id: int | None = None,
        promotion_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        if not actor.strip():
            raise RegistryError("every registry event needs an actor (who did it)")
        if not reason.strip():
            raise RegistryError("every registry event needs a reason (why)")
        if len(key) > 300 or not key:
            raise RegistryError(f"idempotency key must be 1-300 characters, got {len(key)}")
        result = conn.execute(
            events.insert().values(
                uid=uuid.uuid4().hex,
                idempotency_key=key,
                kind=kind,
                target=target,
                alias=alias,
                entry_id=entry_id,
                from_entry_id=from_entry_id,
                to_entry_id=to_entry_id,
                promotion_id=promotion_id,
                actor=actor,
                reason=reason,
                at=at,
                payload=canonical_json(dict(payload or {})),
            )
        )
        return int(result.inserted_primary_key[0])

    def _events_of_key(self, conn: Connection, key: str) -> list[Event]:
        """The event with ``key`` and the alias moves recorded with it (keys ``key#alias``);
        equality lookups only, so the unique index answers them."""
        keys = [key, *(f"{key}#{alias}" for alias in ALIASES)]
        rows = conn.execute(
            sa.select(events).where(events.c.idempotency_key.in_(keys)).order_by(events.c.id)
        ).all()
        if not rows or rows[0].idempotency_key != key:
            return []
        return [self._event(r) for r in rows]

    @staticmethod
    def _check_replay(
        found: list[Event], key: str, kind: str, target: str | None, entry_id: int | None
    ) -> list[Event]:
        lead = next((e for e in found if e.idempotency_key == key), None)
        if lead is None:
            return []
        if lead.kind != kind or lead.target != target or (entry_id is not None and lead.entry_id != entry_id):
            raise IdempotencyConflict(
                f"idempotency key {key!r} was already used by event #{lead.id} ({lead.kind} on "
                f"{lead.target or '-'} entry {lead.entry_id} by {lead.actor} at {lead.at.isoformat()}); "
                f"this request ({kind} on {target or '-'} entry {entry_id}) needs its own key"
            )
        return found

    # ------------------------------------------------------------------ entries
    def register(
        self,
        body: EntryBody,
        model_card: str,
        *,
        actor: str,
        reason: str = "registered from the model pack and its evaluation",
        idempotency_key: str | None = None,
    ) -> tuple[Entry, bool]:
        """Insert ``body`` (returns ``(entry, True)``) or return the identical existing entry
        (``(entry, False)``). Different content under the same model, version and target raises
        :class:`ImmutableEntryError`: a rebuilt pack needs a new version."""
        digest = body.digest()
        key = idempotency_key or f"register:{body.model_name}@{body.version}:{body.target}:{digest[:16]}"
        major, minor, patch, _, _ = semver_key(body.version)
        last_exc: Exception | None = None
        for _ in range(_RETRIES):
            try:
                with self._tx() as conn:
                    row = conn.execute(
                        sa.select(entries).where(
                            entries.c.model_name == body.model_name,
                            entries.c.version == body.version,
                            entries.c.device == body.device,
                            entries.c.precision == body.precision,
                        )
                    ).first()
                    if row is not None:
                        if row.digest != digest:
                            raise ImmutableEntryError(
                                f"{body.model_name}@{body.version} for {body.target} is already registered "
                                f"(entry #{row.id}, sha256 {row.digest[:12]}) with different content "
                                f"(sha256 {digest[:12]}); entries are immutable: publish the change as a new "
                                "semantic version"
                            )
                        return self._entry(row), False
                    now = self._now()
                    result = conn.execute(
                        entries.insert().values(
                            model_name=body.model_name,
                            task=body.task,
                            version=body.version,
                            major=major,
                            minor=minor,
                            patch=patch,
                            device=body.device,
                            precision=body.precision,
                            digest=digest,
                            created_at=now,
                            created_by=actor,
                            body=canonical_json(body.model_dump(mode="json")),
                            model_card=model_card,
                        )
                    )
                    entry_id = int(result.inserted_primary_key[0])
                    self._insert_event(
                        conn,
                        key=key,
                        kind="registered",
                        actor=actor,
                        reason=reason,
                        at=now,
                        target=body.target,
                        entry_id=entry_id,
                        payload={"version": body.version, "digest": digest, "adopted": body.adopted},
                    )
                    row = conn.execute(sa.select(entries).where(entries.c.id == entry_id)).one()
                    return self._entry(row), True
            except sa.exc.IntegrityError as exc:  # a concurrent registration won: read it back
                last_exc = exc
                continue
        raise RegistryError(f"could not register {body.model_name}@{body.version}: {last_exc}")

    def get_entry(self, entry_id: int) -> Entry:
        with self._tx() as conn:
            row = conn.execute(sa.select(entries).where(entries.c.id == entry_id)).first()
        if row is None:
            raise EntryNotFound(f"no registry entry #{entry_id}")
        return self._entry(row)

    def find_entry(self, model_name: str, version: str, target: str) -> Entry:
        cell = Cell.from_target_name(target)
        device, precision = cell.device, cell.precision
        with self._tx() as conn:
            row = conn.execute(
                sa.select(entries).where(
                    entries.c.model_name == model_name,
                    entries.c.version == version,
                    entries.c.device == device,
                    entries.c.precision == precision,
                )
            ).first()
        if row is None:
            raise EntryNotFound(f"{model_name}@{version} for {target} is not registered")
        return self._entry(row)

    def entries(
        self, *, model_name: str | None = None, target: str | None = None, version: str | None = None
    ) -> list[Entry]:
        q = sa.select(entries)
        if model_name:
            q = q.where(entries.c.model_name == model_name)
        if version:
            q = q.where(entries.c.version == version)
        if target:
            cell = Cell.from_target_name(target)
            q = q.where(entries.c.device == cell.device, entries.c.precision == cell.precision)
        with self._tx() as conn:
            rows = conn.execute(q.order_by(entries.c.id)).all()
        return [self._entry(r) for r in rows]

    # ------------------------------------------------------------------ events
    def record_event(
        self,
        kind: str,
        *,
        actor: str,
        reason: str,
        idempotency_key: str,
        target: str | None = None,
        entry_id: int | None = None,
        promotion_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> Event:
        """Append one event that moves nothing (approvals, waivers, rollout steps, hooks).
        The same key again returns the first event unchanged."""
        if kind in ("alias_moved",):
            raise RegistryError("alias moves go through move_aliases(), never record_event()")
        for _ in range(_RETRIES):
            try:
                with self._tx() as conn:
                    replay = self._check_replay(
                        self._events_of_key(conn, idempotency_key), idempotency_key, kind, target, entry_id
                    )
                    if replay:
                        return replay[0]
                    event_id = self._insert_event(
                        conn,
                        key=idempotency_key,
                        kind=kind,
                        actor=actor,
                        reason=reason,
                        at=self._now(),
                        target=target,
                        entry_id=entry_id,
                        promotion_id=promotion_id,
                        payload=payload,
                    )
                    return self._event(conn.execute(sa.select(events).where(events.c.id == event_id)).one())
            except sa.exc.IntegrityError:
                continue  # same key committed concurrently: the next attempt replays it
        raise RegistryError(f"could not record {kind} event with key {idempotency_key!r}")

    def events_for_key(self, key: str) -> list[Event]:
        """The event recorded with ``key`` and the alias moves recorded with it."""
        with self._tx() as conn:
            return self._events_of_key(conn, key)

    def event_by_key(self, key: str) -> Event | None:
        with self._tx() as conn:
            row = conn.execute(sa.select(events).where(events.c.idempotency_key == key)).first()
        return self._event(row) if row is not None else None

    def events(
        self,
        *,
        target: str | None = None,
        entry_id: int | None = None,
        promotion_id: str | None = None,
        kinds: Sequence[str] | None = None,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        q = sa.select(events)
        if target:
            q = q.where(events.c.target == target)
        if entry_id is not None:
            q = q.where(
                sa.or_(
                    events.c.entry_id == entry_id,
                    events.c.to_entry_id == entry_id,
                    events.c.from_entry_id == entry_id,
                )
            )
        if promotion_id:
            q = q.where(events.c.promotion_id == promotion_id)
        if kinds:
            q = q.where(events.c.kind.in_(list(kinds)))
        if after_id is not None:
            q = q.where(events.c.id > after_id)
        q = q.order_by(events.c.id)
        if limit:
            q = q.limit(limit)
        with self._tx() as conn:
            return [self._event(r) for r in conn.execute(q).all()]

    # ------------------------------------------------------------------ approvals and waivers
    def approve(
        self,
        entry_id: int,
        role: str,
        *,
        actor: str,
        reason: str,
        decision: Literal["approved", "rejected"] = "approved",
        idempotency_key: str | None = None,
    ) -> Event:
        if role not in ROLES:
            raise RegistryError(f"role {role!r} is not one of {', '.join(ROLES)}")
        entry = self.get_entry(entry_id)
        key = idempotency_key or f"approval:{entry_id}:{role}:{decision}:{actor}"
        return self.record_event(
            "approval",
            actor=actor,
            reason=reason,
            idempotency_key=key,
            target=entry.target,
            entry_id=entry_id,
            payload={"role": role, "decision": decision, "version": entry.version},
        )

    def approvals(self, entry_id: int) -> dict[str, Event]:
        """The latest decision per role, keeping only roles whose latest decision is approval."""
        latest: dict[str, Event] = {}
        for e in self.events(entry_id=entry_id, kinds=["approval"]):
            latest[e.payload["role"]] = e
        return {r: e for r, e in latest.items() if e.payload.get("decision") == "approved"}

    def waive_vulnerabilities(
        self, entry_id: int, *, actor: str, justification: str, idempotency_key: str | None = None
    ) -> Event:
        entry = self.get_entry(entry_id)
        key = (
            idempotency_key
            or f"waiver:{entry_id}:{actor}:{uuid.uuid5(uuid.NAMESPACE_URL, justification).hex[:12]}"
        )
        return self.record_event(
            "vulnerability_waiver",
            actor=actor,
            reason=justification,
            idempotency_key=key,
            target=entry.target,
            entry_id=entry_id,
            payload={"justification": justification, "version": entry.version},
        )

    def waivers(self, entry_id: int) -> list[Event]:
        return self.events(entry_id=entry_id, kinds=["vulnerability_waiver"])

    # ------------------------------------------------------------------ aliases and targets
    def target_state(self, target: str) -> TargetState:
        Cell.from_target_name(target)
        with self._tx() as conn:
            row = conn.execute(sa.select(targets).where(targets.c.target == target)).first()
        if row is None:
            return TargetState(target=target, version=0, active_promotion=None, event_id=None)
        return TargetState(
            target=target, version=row.version, active_promotion=row.active_promotion, event_id=row.event_id
        )

    def targets(self) -> list[str]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(aliases.c.target).distinct().order_by(aliases.c.target)).all()
        return [r.target for r in rows]

    def alias_states(self, target: str) -> dict[str, AliasState]:
        with self._tx() as conn:
            rows = conn.execute(sa.select(aliases).where(aliases.c.target == target)).all()
        return {
            r.alias: AliasState(target=r.target, alias=r.alias, entry_id=r.entry_id, event_id=r.event_id)
            for r in rows
        }

    def aliases(self, target: str) -> dict[str, Entry | None]:
        """Every alias of ``target`` (``None`` where it points nowhere)."""
        states = self.alias_states(target)
        out: dict[str, Entry | None] = {}
        for alias in ALIASES:
            s = states.get(alias)
            out[alias] = self.get_entry(s.entry_id) if s is not None and s.entry_id is not None else None
        return out

    def alias_entry(self, target: str, alias: str) -> Entry | None:
        return self.aliases(target)[alias]

    def change_target(
        self,
        target: str,
        *,
        kind: str,
        actor: str,
        reason: str,
        idempotency_key: str,
        moves: Mapping[str, int | None] | None = None,
        entry_id: int | None = None,
        expected_version: int | None = None,
        promotion_id: str | None = None,
        lock: Literal["keep", "acquire", "release"] = "keep",
        payload: Mapping[str, Any] | None = None,
    ) -> list[Event]:
        """One atomic change of ``target``: a lead event ``kind`` with ``idempotency_key``, one
        ``alias_moved`` event per alias in ``moves`` (keys ``<key>#<alias>``) and, when
        production/rollback move or the promotion lock changes, the target version + 1.

        ``expected_version``: the target version the caller decided on; if the target moved
        since, :class:`PromotionConflict`. A promotion in flight (``active_promotion``) owns
        production/rollback: anyone else gets :class:`PromotionConflict`. A replay of the same
        key returns the events first recorded and changes nothing.
        """
        Cell.from_target_name(target)
        moves = dict(moves or {})
        for alias in moves:
            if alias not in ALIASES:
                raise RegistryError(f"unknown alias {alias!r}; aliases are {', '.join(ALIASES)}")
        touches_state = lock != "keep" or any(a in DEPLOYMENT_ALIASES for a in moves)
        last_exc: Exception | None = None
        for _ in range(_RETRIES):
            try:
                with self._tx() as conn:
                    replay = self._check_replay(
                        self._events_of_key(conn, idempotency_key), idempotency_key, kind, target, entry_id
                    )
                    if replay:
                        return replay
                    state = conn.execute(sa.select(targets).where(targets.c.target == target)).first()
                    current = state.version if state is not None else 0
                    active = state.active_promotion if state is not None else None
                    if touches_state:
                        if expected_version is not None and expected_version != current:
                            raise PromotionConflict(
                                self._moved_message(conn, target, expected_version, state)
                            )
                        if active is not None and active != promotion_id:
                            raise PromotionConflict(
                                f"{target}: promotion {active!r} is in flight and owns the production and "
                                "rollback aliases; wait for it to finish or abort it"
                            )
                    # Alias rows first, in a fixed order (no lock-order deadlocks on PostgreSQL).
                    current_alias = {}
                    for alias in sorted(moves):
                        row = conn.execute(
                            sa.select(aliases)
                            .where(aliases.c.target == target, aliases.c.alias == alias)
                            .with_for_update()
                        ).first()
                        current_alias[alias] = row
                    now = self._now()
                    lead = self._insert_event(
                        conn,
                        key=idempotency_key,
                        kind=kind,
                        actor=actor,
                        reason=reason,
                        at=now,
                        target=target,
                        entry_id=entry_id,
                        promotion_id=promotion_id,
                        payload={
                            **dict(payload or {}),
                            **({"target_version": current + 1} if touches_state else {}),
                        },
                    )
                    last_event = lead
                    for alias in sorted(moves):
                        row = current_alias[alias]
                        to_entry = moves[alias]
                        last_event = self._insert_event(
                            conn,
                            key=f"{idempotency_key}#{alias}",
                            kind="alias_moved",
                            actor=actor,
                            reason=reason,
                            at=now,
                            target=target,
                            alias=alias,
                            entry_id=entry_id,
                            from_entry_id=row.entry_id if row is not None else None,
                            to_entry_id=to_entry,
                            promotion_id=promotion_id,
                            payload={"cause": kind, "cause_event_id": lead},
                        )
                        if row is None:
                            conn.execute(
                                aliases.insert().values(
                                    target=target, alias=alias, entry_id=to_entry, event_id=last_event
                                )
                            )
                        else:
                            conn.execute(
                                aliases.update()
                                .where(aliases.c.target == target, aliases.c.alias == alias)
                                .values(entry_id=to_entry, event_id=last_event)
                            )
                    if touches_state:
                        new_active = {"acquire": promotion_id, "release": None}.get(lock, active)
                        if state is None:
                            conn.execute(
                                targets.insert().values(
                                    target=target, version=1, active_promotion=new_active, event_id=last_event
                                )
                            )
                        else:
                            updated = conn.execute(
                                targets.update()
                                .where(targets.c.target == target, targets.c.version == current)
                                .values(version=current + 1, active_promotion=new_active, event_id=last_event)
                            )
                            if updated.rowcount != 1:
                                raise _LostRace()
                    rows = conn.execute(
                        sa.select(events)
                        .where(events.c.id >= lead, events.c.id <= last_event)
                        .order_by(events.c.id)
                    ).all()
                    return [
                        self._event(r)
                        for r in rows
                        if r.idempotency_key == idempotency_key
                        or r.idempotency_key.startswith(f"{idempotency_key}#")
                    ]
            except _LostRace:
                if expected_version is not None:
                    raise PromotionConflict(
                        f"{target}: another change committed first (target version {expected_version} "
                        "was current when this one started); re-read the registry and decide again"
                    ) from None
                last_exc = None
                continue
            except sa.exc.IntegrityError as exc:
                last_exc = exc
                with self._tx() as conn:
                    found = self._events_of_key(conn, idempotency_key)
                if self._check_replay(found, idempotency_key, kind, target, entry_id):
                    return found
                if expected_version is not None and touches_state:
                    # A concurrent first change of this target inserted its row first.
                    raise PromotionConflict(
                        f"{target}: another change committed first; re-read the registry and decide again"
                    ) from exc
                continue
        raise RegistryError(f"{target}: could not record {kind} after {_RETRIES} attempts: {last_exc}")

    def _moved_message(self, conn: Connection, target: str, expected: int, state: Any) -> str:
        last = None
        if state is not None:
            row = conn.execute(sa.select(events).where(events.c.id == state.event_id)).first()
            last = self._event(row) if row is not None else None
            if last is not None and last.kind == "alias_moved" and "cause_event_id" in last.payload:
                cause = conn.execute(
                    sa.select(events).where(events.c.id == last.payload["cause_event_id"])
                ).first()
                last = self._event(cause) if cause is not None else last
        what = (
            f" by event #{last.id} ({last.kind} by {last.actor} at {last.at.isoformat()}: {last.reason})"
            if last
            else ""
        )
        now = state.version if state is not None else 0
        return (
            f"{target} changed since it was read (version {expected} -> {now}){what}; "
            "this promotion lost the race: re-read the registry and decide again"
        )

    def move_alias(
        self,
        target: str,
        alias: str,
        entry_id: int | None,
        *,
        actor: str,
        reason: str,
        idempotency_key: str,
        expected_version: int | None = None,
    ) -> list[Event]:
        """Move one alias (e.g. ``staging`` on registration) through a recorded event."""
        return self.change_target(
            target,
            kind=f"{alias}_set",
            actor=actor,
            reason=reason,
            idempotency_key=idempotency_key,
            moves={alias: entry_id},
            entry_id=entry_id,
            expected_version=expected_version,
        )

    # ------------------------------------------------------------------ history
    def history(self, target: str, at: datetime | None = None, alias: str = "production") -> History:
        """Moves of ``alias`` on ``target`` up to ``at`` and the entry it pointed to then:
        ``history("orin/int8", at=X).version`` is the version in production at X."""
        Cell.from_target_name(target)
        q = sa.select(events).where(
            events.c.kind == "alias_moved", events.c.target == target, events.c.alias == alias
        )
        if at is not None:
            q = q.where(events.c.at <= _naive_utc(at))
        with self._tx() as conn:
            rows = conn.execute(q.order_by(events.c.at, events.c.id)).all()
        changes = [self._event(r) for r in rows]
        current = None
        if changes and changes[-1].to_entry_id is not None:
            current = self.get_entry(changes[-1].to_entry_id)
        return History(target=target, alias=alias, at=at, changes=changes, current=current)

    # ------------------------------------------------------------------ webhooks
    def record_delivery(
        self,
        event_id: int,
        endpoint: str,
        *,
        attempt: int,
        ok: bool,
        status_code: int | None = None,
        error: str | None = None,
    ) -> None:
        with self._tx() as conn:
            conn.execute(
                deliveries.insert().values(
                    event_id=event_id,
                    endpoint=endpoint,
                    attempt=attempt,
                    ok=ok,
                    status_code=status_code,
                    error=error,
                    at=self._now(),
                )
            )

    def undelivered(self, endpoint: str, limit: int = 1000) -> list[Event]:
        delivered = sa.select(deliveries.c.event_id).where(deliveries.c.endpoint == endpoint, deliveries.c.ok)
        with self._tx() as conn:
            rows = conn.execute(
                sa.select(events).where(events.c.id.not_in(delivered)).order_by(events.c.id).limit(limit)
            ).all()
        return [self._event(r) for r in rows]

    def delivery_attempts(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(deliveries)
        if endpoint:
            q = q.where(deliveries.c.endpoint == endpoint)
        with self._tx() as conn:
            return [dict(r._mapping) for r in conn.execute(q.order_by(deliveries.c.id)).all()]

    # ------------------------------------------------------------------ consistency
    def consistency_problems(self) -> list[str]:
        """What an auditor would flag: entries whose content no longer hashes to their digest,
        aliases not equal to their last recorded move, target versions that do not count
        their recorded changes. Empty when the registry is consistent."""
        problems = []
        with self._tx() as conn:
            for row in conn.execute(sa.select(entries)).all():
                body = EntryBody.model_validate_json(row.body)
                if body.digest() != row.digest:
                    problems.append(f"entry #{row.id}: content does not hash to its digest")
            for row in conn.execute(sa.select(aliases)).all():
                last = conn.execute(
                    sa.select(events)
                    .where(
                        events.c.kind == "alias_moved",
                        events.c.target == row.target,
                        events.c.alias == row.alias,
                    )
                    .order_by(events.c.id.desc())
                    .limit(1)
                ).first()
                if last is None or last.id != row.event_id or last.to_entry_id != row.entry_id:
                    problems.append(f"{row.target} {row.alias}: alias differs from its last recorded move")
            for row in conn.execute(sa.select(targets)).all():
                payloads = conn.execute(
                    sa.select(events.c.payload).where(
                        events.c.target == row.target, events.c.kind != "alias_moved"
                    )
                ).all()
                numbered = sorted(
                    v for p in payloads if (v := json.loads(p.payload).get("target_version")) is not None
                )
                if numbered != list(range(1, row.version + 1)):
                    problems.append(
                        f"{row.target}: version {row.version} but the recorded changes are numbered "
                        f"{numbered[:3]}...{numbered[-3:]}"
                    )
        return problems


class _LostRace(Exception):
    pass


__all__ = [
    "EntryNotFound",
    "IdempotencyConflict",
    "ImmutableEntryError",
    "PromotionConflict",
    "RegistryStore",
    "make_engine",
    "metadata",
]
