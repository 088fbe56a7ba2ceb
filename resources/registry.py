"""The ``registry`` resource: which registry database, which pinned key, which webhook.

Local: SQLite at ``$ADAS_HOME/registry.db``, the local signing key's ``cosign.pub`` pinned.
Production: ``ADAS_REGISTRY_URL`` (PostgreSQL), ``ADAS_REGISTRY_PUBLIC_KEY`` (a PEM file from the
secret store); optional ``ADAS_REGISTRY_WEBHOOK_URL`` / ``ADAS_REGISTRY_WEBHOOK_SECRET``.
"""

import os
import threading
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from adas.registry.config import RegistryPolicy, load_policy
from adas.registry.finalize import WebhookNotifier
from adas.registry.promotion import PromotionSettings
from adas.registry.store import RegistryStore
from adas.settings import AdasHome
from adas.storage import ArtifactStore
from resources.targets import TARGET_CATALOG

_STORES: dict[str, RegistryStore] = {}
_LOCK = threading.Lock()


def open_registry(url: str) -> RegistryStore:
    """One engine (connection pool) per URL and process; the schema is created on first use."""
    with _LOCK:
        store = _STORES.get(url)
        if store is None:
            if url.startswith("sqlite:///"):
                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            store = _STORES[url] = RegistryStore(url)
        return store


class RegistryResource(dg.ConfigurableResource):
    """The registry of truth and what promotions need around it."""

    url: str = Field(
        description="SQLAlchemy URL: sqlite:///... locally, postgresql+psycopg2://... in production"
    )
    pinned_public_key: str = Field(
        default="", description="PEM file of the public key packs must be signed with"
    )
    webhook_url: str = Field(
        default="", description="every registry event is POSTed here (HMAC-SHA256 signed)"
    )
    webhook_secret: str = Field(default="", description="HMAC key of the webhook signature")
    policy_path: str = Field(default="", description="registry policy YAML (default: config/registry.yaml)")
    workdir: str = Field(
        default="", description="scratch space for rollouts (default: a temporary directory)"
    )
    iam_bucket: str = Field(default="", description="bucket named in the read-only IAM policy")
    iam_prefix: str = Field(default="", description="key prefix of the artifacts in that bucket")

    def store(self) -> RegistryStore:
        return open_registry(self.url)

    def policy(self) -> RegistryPolicy:
        return load_policy(self.policy_path or None)

    def public_key_pem(self) -> bytes | None:
        path = Path(self.pinned_public_key) if self.pinned_public_key else None
        return path.read_bytes() if path is not None and path.is_file() else None

    def notifier(self) -> WebhookNotifier | None:
        if not self.webhook_url:
            return None
        return WebhookNotifier(self.webhook_url, self.webhook_secret, self.policy().webhook)

    def deliver(self) -> dict[str, int]:
        """Send every registry event not yet acknowledged to the webhook (if one is configured)."""
        notifier = self.notifier()
        return notifier.deliver_pending(self.store()) if notifier is not None else {}

    def settings(self, artifact_store: ArtifactStore) -> PromotionSettings:
        return PromotionSettings(
            registry=self.store(),
            store=artifact_store,
            catalog=TARGET_CATALOG,
            policy=self.policy(),
            pinned_public_key_pem=self.public_key_pem(),
            notifier=self.notifier(),
            workdir=Path(self.workdir) if self.workdir else None,
            iam_bucket=self.iam_bucket or None,
            iam_prefix=self.iam_prefix if self.iam_bucket else None,
        )


def registry_resource(env: str, home: AdasHome | None = None) -> RegistryResource:
    """The registry resource for ``env`` (called from ``resources.build_resources``)."""
    webhook: dict[str, Any] = {}
    if os.environ.get("ADAS_REGISTRY_WEBHOOK_URL"):
        webhook = {
            "webhook_url": dg.EnvVar("ADAS_REGISTRY_WEBHOOK_URL"),
            "webhook_secret": dg.EnvVar("ADAS_REGISTRY_WEBHOOK_SECRET"),
        }
    if env == "local":
        home = home or AdasHome.from_env()
        return RegistryResource(
            url=f"sqlite:///{home.registry_db}",
            pinned_public_key=str(home.keys / "cosign.pub"),
            workdir=str(home.root / "work" / "rollouts"),
            **webhook,
        )
    return RegistryResource(
        url=dg.EnvVar("ADAS_REGISTRY_URL"),
        pinned_public_key=dg.EnvVar("ADAS_REGISTRY_PUBLIC_KEY"),
        iam_bucket=os.environ.get("ADAS_ARTIFACT_BUCKET", ""),
        iam_prefix=os.environ.get("ADAS_ARTIFACT_PREFIX", "gold"),
        **webhook,
    )
