"""Post-promotion hooks: model card, release notes, the read-only access policy, the data-mining
request (#12) seeded from what the candidate got wrong, the next weekly full-library
evaluation and retention pruning; each recorded once per promotion."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from adas.registry.access_policy import readonly_iam_policy
from adas.registry.governance import GovernanceReport
from adas.registry.models import Entry, Event, registry_prefix
from adas.registry.release_notes import release_notes
from adas.registry.retention import prune_intermediates
from adas.registry.rollout.report import RolloutReport
from adas.registry.settings import PromotionSettings


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


@dataclass
class PromotionHooks:
    """The hooks of one promotion. Each is recorded once, as an event keyed
    ``<promotion key>:hook:<name>``, so a rerun after a crash skips what is done."""

    settings: PromotionSettings
    entry: Entry
    promotion_id: str
    key: str
    actor: str

    def done(self, name: str) -> Event | None:
        return self.settings.registry.event_by_key(f"{self.key}:hook:{name}")

    def record(self, kind: str, name: str, reason: str, payload: dict[str, Any]) -> None:
        if self.done(name) is None:
            self.settings.registry.record_event(
                kind,
                actor=self.actor,
                reason=reason,
                idempotency_key=f"{self.key}:hook:{name}",
                target=self.entry.target,
                entry_id=self.entry.id,
                promotion_id=self.promotion_id,
                payload=payload,
            )

    def _put(self, key: str, text: str) -> str:
        return self.settings.store.put_bytes(key, text.encode()).uri

    def request_mining(self, rollout: RolloutReport | None) -> str:
        """Store the mining request (what to mine next) and record it; returns its URI."""
        uri_key = f"registry/promotions/{self.promotion_id}/mining_request.json"
        if self.done("mining") is None:
            entry = self.entry
            failing = list(entry.body.evaluation.failing) if entry.body.evaluation else []
            body = mining_request(
                entry,
                promotion_id=self.promotion_id,
                failing_slices=failing,
                diff_clusters=rollout.diff_clusters if rollout else [],
            )
            uri = self._put(uri_key, json.dumps(body, indent=2))
            self.record(
                "mining_requested",
                "mining",
                f"seed offline mining from {len(body['error_clusters'])} error clusters and "
                f"{len(body['failing_slices']) + len(body['regressed_slices'])} weak slices",
                {"request": uri, "priority": body["priority"], "clusters": body["error_clusters"][:5]},
            )
        return self.settings.store.uri(uri_key)

    def after_promotion(
        self,
        previous: Entry | None,
        reason: str,
        governance: GovernanceReport | None,
        rollout: RolloutReport | None,
        documents: dict[str, str],
    ) -> dict[str, Any]:
        """Model card, release notes, read-only access policy, mining request, next weekly
        evaluation, retention pruning; returns ``{hook: URI or summary}`` and the documents."""
        settings, entry = self.settings, self.entry
        store = settings.store
        prefix = registry_prefix(entry)
        hooks: dict[str, Any] = {}
        card_uri = self._put(f"{prefix}/model_card.md", entry.model_card)
        hooks["model_card"] = card_uri
        notes_key = f"registry/promotions/{self.promotion_id}/release_notes.md"
        if self.done("release-notes") is None:
            notes = release_notes(
                entry,
                previous,
                model_card_uri=card_uri,
                governance_markdown=governance.to_markdown()
                if governance
                else "(checked by an earlier attempt)",
                rollout_markdown=rollout.to_markdown() if rollout else None,
                promotion_id=self.promotion_id,
                actor=self.actor,
                reason=reason,
            )
            self.record(
                "release_notes_published",
                "release-notes",
                f"release notes for {entry.version}",
                {"uri": self._put(notes_key, notes)},
            )
        hooks["release_notes"] = store.uri(notes_key)
        policy_doc = readonly_iam_policy(entry, settings.policy.iam, settings.iam_bucket, settings.iam_prefix)
        hooks["iam_policy"] = self._put(
            f"{prefix}/iam_readonly_policy.json", json.dumps(policy_doc, indent=2)
        )
        self.record(
            "access_policy_rendered",
            "iam",
            f"read-only access to {entry.body.pointers.pack_prefix} for serving consumers",
            {"uri": hooks["iam_policy"], "resources": policy_doc["Statement"][0]["Resource"]},
        )
        hooks["mining_request"] = self.request_mining(rollout)
        due = next_weekly_evaluation(datetime.now(UTC))
        self.record(
            "evaluation_scheduled",
            "weekly-eval",
            f"next weekly full-library evaluation of {entry.version} on {entry.target}",
            {"due_at": due.isoformat(), "schedule": "weekly_full_library_evaluation", "profile": "full"},
        )
        weekly = self.done("weekly-eval")
        hooks["weekly_evaluation_due"] = weekly.payload["due_at"] if weekly else due.isoformat()
        if self.done("retention") is None:
            pruned = prune_intermediates(store, settings.registry, settings.policy.retention)
            self.record(
                "retention_pruned",
                "retention",
                pruned.summary(),
                {"deleted": pruned.deleted[:50], "count": len(pruned.deleted)},
            )
            hooks["retention"] = pruned.summary()
        hooks.update(documents)
        return hooks
