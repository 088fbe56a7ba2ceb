"""The registry of truth: the API over the schema of :mod:`adas.registry.schema` (SQLite locally,
PostgreSQL in production).

Concurrency: a change to a target's deployment state reads the target's version and writes
``UPDATE ... SET version = version + 1 WHERE version = <read>``; of two racing promotions
exactly one update matches, the other raises :class:`PromotionConflict`. A request replayed with
the same idempotency key returns the events of the first one and records nothing new.

Kept as one module because :class:`RegistryStore` is one transactional API: every write
(registration, event, alias move, target change) shares the same transaction, event-insert,
replay and retry helpers, and splitting the class would scatter those invariants. The schema
and its triggers live in :mod:`adas.registry.schema`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from adas.cell import Cell
from adas.intake.claims import VersionClaim, VersionTaken
from adas.intake.contract import version_identity
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
from adas.registry.schema import (
    aliases,
    create_schema,
    deliveries,
    entries,
    events,
    make_engine,
    targets,
    version_claims,
)


class PromotionConflict(RegistryError):
    """Another change won the race for this target (or holds it); re-read and decide again."""


class IdempotencyConflict(RegistryError):
    """An idempotency key was reused for a different request."""


class ImmutableEntryError(RegistryError):
    """An entry with this model, version and target exists with different content."""


class EntryNotFound(RegistryError, LookupError):
    pass


class VersionClaimConflict(RegistryError, VersionTaken):
    """A different bundle holds this task and version (``holder``); versions are immutable."""


DEPLOYMENT_ALIASES = ("production", "rollback")
_RETRIES = 8


def _naive_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None:
        return dt
    return dt.astimezone(UTC).replace(tzinfo=None)


def _aware(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class _EventRequest:
    """Who records which event under which idempotency key, about what: what a replay of the key
    must match, and what every event a write inserts for it carries."""

    key: str
    kind: str
    actor: str
    reason: str
    target: str | None = None
    entry_id: int | None = None
    promotion_id: str | None = None

    def alias_move(self, alias: str) -> _EventRequest:
        """The ``alias_moved`` event recorded with this request (key ``<key>#<alias>``)."""
        return replace(self, key=f"{self.key}#{alias}", kind="alias_moved")


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
        create_schema(self.engine)

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
        req: _EventRequest,
        *,
        at: datetime,
        alias: str | None = None,
        from_entry_id: int | None = None,
        to_entry_id: int | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        if not req.actor.strip():
            raise RegistryError("every registry event needs an actor (who did it)")
        if not req.reason.strip():
            raise RegistryError("every registry event needs a reason (why)")
        if len(req.key) > 300 or not req.key:
            raise RegistryError(f"idempotency key must be 1-300 characters, got {len(req.key)}")
        result = conn.execute(
            events.insert().values(
                uid=uuid.uuid4().hex,
                idempotency_key=req.key,
                kind=req.kind,
                target=req.target,
                alias=alias,
                entry_id=req.entry_id,
                from_entry_id=from_entry_id,
                to_entry_id=to_entry_id,
                promotion_id=req.promotion_id,
                actor=req.actor,
                reason=req.reason,
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

    def _replayed(self, conn: Connection, req: _EventRequest) -> list[Event]:
        """The events first recorded with ``req``'s key (empty if none); the key used for another
        request raises :class:`IdempotencyConflict`."""
        return self._check_replay(
            self._events_of_key(conn, req.key), req.key, req.kind, req.target, req.entry_id
        )

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
                        _EventRequest(
                            key, "registered", actor, reason, target=body.target, entry_id=entry_id
                        ),
                        at=now,
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

    # ------------------------------------------------------------------ version claims
    def claim_version(self, task: str, version: str, bundle_sha256: str, claimer: str) -> VersionClaim:
        """Claim ``task``/``version`` (build metadata stripped) for the bundle ``bundle_sha256``:
        one INSERT against the unique ``(task, version)`` constraint, so of any number of
        claimers on any number of machines exactly one wins. The same bundle claiming again gets
        the existing claim back (idempotent); a different bundle gets
        :class:`VersionClaimConflict` naming the holder's bundle, claimer and time."""
        identity = version_identity(version)
        problems = [
            f"{name} must be 1-{limit} characters, got {len(value)}"
            for name, value, limit in (
                ("task", task, 100),
                ("version", identity, 64),
                ("claimer", claimer, 300),
            )
            if not value.strip() or len(value) > limit
        ]
        if len(bundle_sha256) != 64 or any(c not in "0123456789abcdef" for c in bundle_sha256):
            problems.append(f"bundle_sha256 must be 64 lowercase hex digits, got {bundle_sha256!r}")
        if problems:
            raise RegistryError(f"cannot claim {task!r} {version!r}: {'; '.join(problems)}")
        for _ in range(_RETRIES):
            now = self._now()
            try:
                with self._tx() as conn:
                    conn.execute(
                        version_claims.insert().values(
                            task=task,
                            version=identity,
                            bundle_sha256=bundle_sha256,
                            claimer=claimer,
                            claimed_at=now,
                        )
                    )
                return VersionClaim(task, identity, bundle_sha256, claimer, _aware(now))
            except sa.exc.IntegrityError:
                holder = self.version_claim(task, identity)
                if holder is None:
                    continue  # the insert that blocked ours rolled back: try again
                if holder.bundle_sha256 == bundle_sha256:
                    return holder
                raise VersionClaimConflict(
                    f"{task} {identity} is already claimed by bundle {holder.bundle_sha256} "
                    f"({holder.claimer}, at {holder.claimed_at.isoformat()}); this bundle is "
                    f"{bundle_sha256}: versions are immutable (build metadata does not make a new "
                    "one), bump the version",
                    holder,
                ) from None
        raise RegistryError(f"could not claim {task} {identity} after {_RETRIES} attempts")

    def version_claim(self, task: str, version: str) -> VersionClaim | None:
        """The claim on ``task``/``version`` (build metadata stripped), or None if it is free."""
        with self._tx() as conn:
            row = conn.execute(
                sa.select(version_claims).where(
                    version_claims.c.task == task, version_claims.c.version == version_identity(version)
                )
            ).first()
        if row is None:
            return None
        return VersionClaim(row.task, row.version, row.bundle_sha256, row.claimer, _aware(row.claimed_at))

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
        req = _EventRequest(idempotency_key, kind, actor, reason, target, entry_id, promotion_id)
        for _ in range(_RETRIES):
            try:
                with self._tx() as conn:
                    replay = self._replayed(conn, req)
                    if replay:
                        return replay[0]
                    event_id = self._insert_event(conn, req, at=self._now(), payload=payload)
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
        return self._record_entry_decision(
            "approval",
            entry_id,
            actor=actor,
            reason=reason,
            key=idempotency_key or f"approval:{entry_id}:{role}:{decision}:{actor}",
            payload={"role": role, "decision": decision},
        )

    def _record_entry_decision(
        self, kind: str, entry_id: int, *, actor: str, reason: str, key: str, payload: dict[str, Any]
    ) -> Event:
        """One person's decision about one entry, as an event on the entry's target that names the
        version decided on (an approval, a waiver, an amber acceptance)."""
        entry = self.get_entry(entry_id)
        return self.record_event(
            kind,
            actor=actor,
            reason=reason,
            idempotency_key=key,
            target=entry.target,
            entry_id=entry_id,
            payload={**payload, "version": entry.version},
        )

    @staticmethod
    def _text_key(text: str) -> str:
        """A short stable digest of free text, for idempotency keys of decisions that quote it."""
        return uuid.uuid5(uuid.NAMESPACE_URL, text).hex[:12]

    def approvals(self, entry_id: int) -> dict[str, Event]:
        """The latest decision per role, keeping only roles whose latest decision is approval."""
        latest: dict[str, Event] = {}
        for e in self.events(entry_id=entry_id, kinds=["approval"]):
            latest[e.payload["role"]] = e
        return {r: e for r, e in latest.items() if e.payload.get("decision") == "approved"}

    def waive_vulnerabilities(
        self, entry_id: int, *, actor: str, justification: str, idempotency_key: str | None = None
    ) -> Event:
        return self._record_entry_decision(
            "vulnerability_waiver",
            entry_id,
            actor=actor,
            reason=justification,
            key=idempotency_key or f"waiver:{entry_id}:{actor}:{self._text_key(justification)}",
            payload={"justification": justification},
        )

    def waivers(self, entry_id: int) -> list[Event]:
        return self.events(entry_id=entry_id, kinds=["vulnerability_waiver"])

    def accept_amber(
        self,
        entry_id: int,
        *,
        role: str,
        actor: str,
        quote: str,
        reason: str,
        idempotency_key: str | None = None,
    ) -> Event:
        """Record that ``role`` accepts the entry's amber gate verdicts, quoting their intervals."""
        return self._record_entry_decision(
            "amber_accepted",
            entry_id,
            actor=actor,
            reason=reason,
            key=idempotency_key or f"amber:{entry_id}:{role}:{self._text_key(quote + reason)}",
            payload={"role": role, "quote": quote},
        )

    def amber_acceptances(self, entry_id: int) -> list[Event]:
        return self.events(entry_id=entry_id, kinds=["amber_accepted"])

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
        req = _EventRequest(idempotency_key, kind, actor, reason, target, entry_id, promotion_id)
        last_exc: Exception | None = None
        for _ in range(_RETRIES):
            try:
                with self._tx() as conn:
                    replay = self._replayed(conn, req)
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
                        req,
                        at=now,
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
                            req.alias_move(alias),
                            at=now,
                            alias=alias,
                            from_entry_id=row.entry_id if row is not None else None,
                            to_entry_id=to_entry,
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
                    found = self._replayed(conn, req)
                if found:
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
    "VersionClaimConflict",
]
