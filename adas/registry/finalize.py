"""Finalize and broadcast: alias moves, release notes, post-promotion hooks, webhooks,
retention pruning and the read-only access policy of the production artifact prefix."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from adas.registry.config import IamPolicy, RetentionPolicy, WebhookPolicy
from adas.registry.models import Entry, Event, RegistryError, semver_key
from adas.registry.store import RegistryStore
from adas.storage import ArtifactStore

SIGNATURE_HEADER = "X-ADAS-Signature-256"
TIMESTAMP_HEADER = "X-ADAS-Timestamp"
EVENT_HEADER = "X-ADAS-Event"
DELIVERY_HEADER = "X-ADAS-Delivery"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def registry_prefix(entry: Entry) -> str:
    b = entry.body
    return f"registry/{b.model_name}/{b.version}/{b.device}/{b.precision}"


# --------------------------------------------------------------------------- alias moves


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


# --------------------------------------------------------------------------- release notes


def _link(name: str, uri: str | None) -> str:
    return f"[{name}]({uri})" if uri else f"{name}: not available"


def release_notes(
    entry: Entry,
    previous: Entry | None,
    *,
    model_card_uri: str,
    governance_markdown: str,
    rollout_markdown: str | None,
    promotion_id: str,
    actor: str,
    reason: str,
) -> str:
    b = entry.body
    reports = b.reports
    summary = reports.get("evaluation/evaluation_summary.md")
    sim = reports.get("simulation/sim_verdict.md") or reports.get("simulation/sim_verdict.json")
    sbom = b.security.sbom
    perf = b.performance
    delta = ""
    if perf.AP is not None and perf.production_AP is not None:
        delta = f" ({100 * (perf.AP - perf.production_AP):+.1f} points vs {perf.production_version})"
    lines = [
        f"# Release notes: {b.model_name} {b.version} on {b.target}",
        "",
        f"Promoted to production on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {actor} ({reason}); "
        f"promotion `{promotion_id}`. Previous production: "
        + (f"{previous.version} (now the `rollback` alias)." if previous else "none."),
        "",
        "## Links",
        "",
        f"- {_link('Model card', model_card_uri)}",
        f"- {_link('Evaluation summary', summary.uri if summary else None)}",
        f"- {_link('Simulation verdict', sim.uri if sim else None)}",
        f"- {_link('SBOM (CycloneDX)', sbom.uri if sbom else None)}",
        f"- Pack: {b.pointers.pack_uri} (container `{b.pointers.container_tag}`, W&B `{b.pointers.wandb_artifact}`)",
        "",
        "## What changed",
        "",
        f"- AP@[.5:.95] {100 * perf.AP:.1f}{delta}" if perf.AP is not None else "- AP: n/a",
        f"- lineage: training run `{b.pointers.training_run_id}`, dataset `{b.pointers.dataset_tag}`, "
        f"git `{b.pointers.git_sha}`",
    ]
    regressions = [s for s in b.slices if s.delta_points is not None and s.delta_points < 0]
    if regressions:
        lines.append(
            "- slices below production: "
            + ", ".join(f"{s.slice} ({s.delta_points:+.1f})" for s in regressions)
        )
    lines += ["", "## Governance", "", governance_markdown, ""]
    if rollout_markdown:
        lines += ["## Rollout", "", rollout_markdown, ""]
    lines += [
        "## Rollback",
        "",
        f"`adas-registry rollback --target {b.target} --actor <you> --reason '<why>'` "
        "(or the `rollback` job in Dagster) moves production back to the `rollback` alias.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- post-promotion hooks


def mining_request(
    entry: Entry, *, promotion_id: str, failing_slices: Sequence[str], diff_clusters: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """What offline mining (#12) should look for next: the slices that fail or regress, and the
    clusters where the candidate disagreed with production in shadow/canary traffic."""
    b = entry.body
    weak = sorted(
        (s for s in b.slices if s.delta_points is not None and s.delta_points < 0),
        key=lambda s: s.delta_points or 0.0,
    )
    clusters = [c for c in diff_clusters if c.get("mean_disagreement", 0) > 0] or list(diff_clusters[:3])
    return {
        "schema_version": 1,
        "kind": "data_mining_request",
        "requested_at": datetime.now(UTC).isoformat(),
        "model": b.model_name,
        "version": b.version,
        "target": b.target,
        "promotion_id": promotion_id,
        "failing_slices": sorted(set(failing_slices)),
        "regressed_slices": [
            {"slice": s.slice, "delta_points": s.delta_points, "critical": s.critical} for s in weak
        ],
        "error_clusters": clusters,
        "priority": "high" if any(s.critical for s in weak) or failing_slices else "normal",
    }


def next_weekly_evaluation(now: datetime, weekday: int = 6, hour: int = 3) -> datetime:
    """The next run of ``weekly_full_library_evaluation`` (cron ``0 3 * * 0``: Sunday 03:00 UTC)."""
    now = now.astimezone(UTC)
    days = (weekday - now.weekday()) % 7
    candidate = (now + timedelta(days=days)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return candidate if candidate > now else candidate + timedelta(days=7)


# --------------------------------------------------------------------------- retention


class PruneReport(BaseModel):
    deleted: list[str]
    protected: list[str]
    kept_versions: dict[str, list[str]]
    dry_run: bool

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        return (
            f"retention: {verb} {len(self.deleted)} heavy intermediates, skipped {len(self.protected)} that a "
            f"registry entry points to; kept versions {self.kept_versions}"
        )


def protected_keys(registry: RegistryStore) -> set[str]:
    """Every key a registry entry points to (never pruned)."""
    keys: set[str] = set()
    for e in registry.entries():
        p = e.body.pointers
        keys.update(x.key for x in p.artifacts.values())
        if p.manifest:
            keys.add(p.manifest.key)
        keys.update(x.key for x in e.body.reports.values())
        for v in (e.body.evaluation, e.body.simulation):
            if v and v.report:
                keys.add(v.report.key)
        if e.body.security.sbom:
            keys.add(e.body.security.sbom.key)
    return keys


def prune_intermediates(
    store: ArtifactStore, registry: RegistryStore, policy: RetentionPolicy, *, dry_run: bool = False
) -> PruneReport:
    """Delete heavy intermediates (``policy.heavy_patterns``) of model versions outside the newest
    ``keep_versions`` per task and not held by any alias; never a key an entry points to."""
    keys = protected_keys(registry)
    alias_versions: dict[str, set[str]] = {}
    for target in registry.targets():
        for e in registry.aliases(target).values():
            if e is not None:
                alias_versions.setdefault(e.body.task, set()).add(e.version)
    candidates = [
        k for k in store.list_keys("models/") if any(fnmatch.fnmatch(k, p) for p in policy.heavy_patterns)
    ]
    versions: dict[str, set[str]] = {}
    for k in store.list_keys("models/"):
        parts = k.split("/")
        if len(parts) > 3:
            try:
                semver_key(parts[2])
            except ValueError:
                continue
            versions.setdefault(parts[1], set()).add(parts[2])
    kept = {
        task: sorted(
            set(sorted(vs, key=semver_key)[-policy.keep_versions :]) | alias_versions.get(task, set()),
            key=semver_key,
        )
        for task, vs in versions.items()
    }
    deleted, protected = [], []
    for k in candidates:
        task, version = k.split("/")[1:3]
        if version in kept.get(task, []):
            continue
        if k in keys:
            protected.append(k)
            continue
        deleted.append(k)
        if not dry_run:
            store.delete(k)
    return PruneReport(deleted=deleted, protected=protected, kept_versions=kept, dry_run=dry_run)


# --------------------------------------------------------------------------- signed webhooks


def sign_payload(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_signature(
    secret: str, headers: dict[str, str], body: bytes, *, tolerance_s: float = 300, now: float | None = None
) -> bool:
    """What a receiver does: recompute the HMAC over ``timestamp.body`` and compare in constant
    time; reject stale timestamps (replays)."""
    lower = {k.lower(): v for k, v in headers.items()}
    ts = lower.get(TIMESTAMP_HEADER.lower(), "")
    sig = lower.get(SIGNATURE_HEADER.lower(), "")
    try:
        age = abs((now if now is not None else time.time()) - float(ts))
    except ValueError:
        return False
    return age <= tolerance_s and hmac.compare_digest(sign_payload(secret, ts, body), sig)


class WebhookNotifier:
    """Delivers every registry event, in order, to one endpoint; each POST carries an
    HMAC-SHA256 signature. Deliveries are recorded (append-only), so a rerun sends only what
    has not been acknowledged with a 2xx."""

    def __init__(
        self,
        url: str,
        secret: str,
        policy: WebhookPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not secret:
            raise RegistryError("a webhook needs a signing secret (ADAS_REGISTRY_WEBHOOK_SECRET)")
        self.url = url
        self.secret = secret
        self.policy = policy or WebhookPolicy()
        self.sleep = sleep

    def _post(self, event: Event) -> tuple[int | None, str | None]:
        body = json.dumps(event.as_webhook_body(), sort_keys=True).encode()
        ts = str(int(time.time()))
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                EVENT_HEADER: f"registry.{event.kind}",
                DELIVERY_HEADER: event.uid,
                TIMESTAMP_HEADER: ts,
                SIGNATURE_HEADER: sign_payload(self.secret, ts, body),
            },
        )
        try:
            with _DIRECT.open(req, timeout=self.policy.timeout_s) as resp:
                return resp.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def deliver_pending(self, registry: RegistryStore) -> dict[str, int]:
        sent = failed = 0
        for event in registry.undelivered(self.url):
            for attempt in range(1, self.policy.max_attempts + 1):
                status, error = self._post(event)
                ok = status is not None and 200 <= status < 300
                registry.record_delivery(
                    event.id, self.url, attempt=attempt, ok=ok, status_code=status, error=error
                )
                if ok:
                    sent += 1
                    break
                if attempt < self.policy.max_attempts:
                    self.sleep(self.policy.backoff_s * attempt)
            else:
                failed += 1
                break  # keep order: later events wait until this one is acknowledged
        return {"delivered": sent, "failed": failed}


# --------------------------------------------------------------------------- access policy


def readonly_iam_policy(
    entry: Entry, iam: IamPolicy, bucket: str | None = None, prefix: str | None = None
) -> dict[str, Any]:
    """IAM policy document for serving consumers: read-only on the production pack's prefix,
    explicit deny of every write there, TLS only, pull of the serving image."""
    bucket = bucket or iam.bucket
    root = (prefix if prefix is not None else iam.prefix).strip("/")
    pack = entry.body.pointers.pack_prefix.strip("/")
    key_prefix = f"{root}/{pack}" if root else pack
    models = f"{root}/models" if root else "models"
    objects = f"arn:aws:s3:::{bucket}/{key_prefix}/*"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadProductionPack",
            "Effect": "Allow",
            "Action": [
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:GetObjectAttributes",
                "s3:GetObjectTagging",
            ],
            "Resource": [objects],
        },
        {
            "Sid": "ListProductionPack",
            "Effect": "Allow",
            "Action": ["s3:ListBucket"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
            "Condition": {"StringLike": {"s3:prefix": [f"{key_prefix}/*", key_prefix]}},
        },
        {
            "Sid": "DenyWritesToModelArtifacts",
            "Effect": "Deny",
            "Action": [
                "s3:PutObject",
                "s3:PutObjectAcl",
                "s3:PutObjectTagging",
                "s3:DeleteObject",
                "s3:DeleteObjectVersion",
                "s3:RestoreObject",
                "s3:PutObjectRetention",
                "s3:PutObjectLegalHold",
            ],
            "Resource": [f"arn:aws:s3:::{bucket}/{models}/*"],
        },
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Action": ["s3:*"],
            "Resource": [f"arn:aws:s3:::{bucket}", objects],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
    ]
    if iam.ecr_repository_arn:
        statements += [
            {
                "Sid": "PullServingImage",
                "Effect": "Allow",
                "Action": [
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                    "ecr:BatchCheckLayerAvailability",
                ],
                "Resource": [iam.ecr_repository_arn],
            },
            {
                "Sid": "EcrLogin",
                "Effect": "Allow",
                "Action": ["ecr:GetAuthorizationToken"],
                "Resource": ["*"],
            },
        ]
    return {
        "Version": "2012-10-17",
        "Id": f"adas-serving-readonly-{entry.body.model_name}-{entry.version}-{entry.body.device}-{entry.body.precision}",
        "Statement": statements,
    }
