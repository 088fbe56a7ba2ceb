"""The registry's database schema: one SQLAlchemy 2 schema on SQLite (local) and PostgreSQL
(production), with the triggers that make it append-only in the database itself.

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
``registry_version_claims``  append-only. Which bundle (sha256) holds ``task``/``version``
                      (build metadata stripped), who claimed it and when; the unique
                      ``(task, version)`` constraint makes a claim one atomic insert.

Immutability is enforced by the database itself, not only by this code: triggers (SQLite
``RAISE(ABORT)``, PostgreSQL plpgsql) reject UPDATE and DELETE (and TRUNCATE) on entries,
events, deliveries and version claims, DELETE on aliases and targets, an alias write without its event, and a
target change that does not bump the version by one and name a new event.
"""

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

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

version_claims = sa.Table(
    "registry_version_claims",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(100), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("bundle_sha256", sa.String(64), nullable=False),
    sa.Column("claimer", sa.String(300), nullable=False),
    sa.Column("claimed_at", sa.DateTime(), nullable=False),
    sa.UniqueConstraint("task", "version", name="uq_claim_task_version"),
)

_APPEND_ONLY = (
    "registry_entries",
    "registry_events",
    "registry_webhook_deliveries",
    "registry_version_claims",
)
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


def create_schema(engine: Engine) -> None:
    """Create the tables and (re)install the triggers; safe to call on every start."""
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            # Concurrent first starts (several workers) must not race on CREATE TABLE.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242018)"))
        metadata.create_all(conn)
        # Straight to the DBAPI cursor: the trigger bodies hold '%' placeholders that a
        # parameter-style driver call would try to interpolate.
        cursor = conn.connection.cursor()
        try:
            for stmt in _pg_ddl() if postgres else _sqlite_ddl():
                cursor.execute(stmt)
        finally:
            cursor.close()
