"""Which registry, which trusted keys, which webhook: the registry's settings, read in one place.

Local (``ADAS_ENV=local``): SQLite at ``$ADAS_HOME/registry.db``, the trust file
``$ADAS_HOME/keys/trusted_keys.yaml`` (written by ``adas-registry keys init``), rollouts under
``$ADAS_HOME/work/rollouts``. Production: the database ``$ADAS_REGISTRY_URL`` (PostgreSQL), the
reviewed trust file ``config/trusted_keys.yaml`` (``$ADAS_TRUSTED_KEYS`` names another, in either
environment), the IAM policy's bucket and prefix from the artifact store's settings. Signatures
are verified with the trust file's keys only (:mod:`adas.packaging.trust`).
Both: ``$ADAS_REGISTRY_WEBHOOK_URL`` / ``$ADAS_REGISTRY_WEBHOOK_SECRET`` when a webhook is set.

The Dagster resource (``resources.registry``) and the ``adas-registry`` CLI both build on
:class:`RegistrySettings`; :class:`PromotionSettings` is what one promotion needs.
"""

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from adas.catalog import TargetCatalog
from adas.packaging.oci_settings import OciRegistrySettings
from adas.packaging.trust import trust_file_path
from adas.registry.config import RegistryPolicy, load_policy
from adas.registry.store import RegistryStore
from adas.registry.webhook import WebhookNotifier, deliver
from adas.settings import AdasHome
from adas.storage import ENVIRONMENTS, ArtifactStore

URL_ENV = "ADAS_REGISTRY_URL"
WEBHOOK_URL_ENV = "ADAS_REGISTRY_WEBHOOK_URL"
WEBHOOK_SECRET_ENV = "ADAS_REGISTRY_WEBHOOK_SECRET"

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


@dataclass
class PromotionSettings:
    registry: RegistryStore
    store: ArtifactStore
    policy: RegistryPolicy
    trusted_keys: Path | None  # the trust file (trusted_keys.yaml) signatures are verified against
    # Placement of the rendered Argo / SageMaker documents; None renders them without one.
    catalog: TargetCatalog | None = None
    notifier: WebhookNotifier | None = None
    workdir: Path | None = None
    triton_venv: Path | None = None
    iam_bucket: str | None = None
    iam_prefix: str | None = None
    # The OCI registry deployments pull pinned digests from; None: only adopted baselines deploy.
    oci: OciRegistrySettings | None = None


@dataclass(frozen=True)
class RegistrySettings:
    """The registry of truth and what promotions need around it (field meanings: the resource's)."""

    url: str
    trusted_keys: str = ""
    webhook_url: str = ""
    webhook_secret: str = ""
    policy_path: str = ""
    workdir: str = ""
    iam_bucket: str = ""
    iam_prefix: str = ""

    @staticmethod
    def env_fields(env: str) -> dict[str, str]:
        """``field -> environment variable`` of the fields ``env`` reads from variables (the
        Dagster resource names these variables instead of copying their values)."""
        fields = {"url": URL_ENV} if env == "production" else {}
        if os.environ.get(WEBHOOK_URL_ENV):
            fields.update(webhook_url=WEBHOOK_URL_ENV, webhook_secret=WEBHOOK_SECRET_ENV)
        return fields

    @classmethod
    def from_env(cls, env: str | None = None, home: AdasHome | None = None) -> "RegistrySettings":
        env = env or os.environ.get("ADAS_ENV", "local")
        from_vars = {name: os.environ.get(var, "") for name, var in cls.env_fields(env).items()}
        if env == "local":
            home = home or AdasHome.from_env()
            local = {
                "url": f"sqlite:///{home.registry_db}",
                "trusted_keys": str(trust_file_path(home, env)),
                "workdir": str(home.root / "work" / "rollouts"),
            }
            return cls(**{**local, **from_vars})
        if env == "production":
            return cls(
                trusted_keys=str(trust_file_path(env=env)),
                iam_bucket=os.environ.get("ADAS_ARTIFACT_BUCKET", ""),
                iam_prefix=os.environ.get("ADAS_ARTIFACT_PREFIX", "gold"),
                **{"url": "", **from_vars},
            )
        raise ValueError(f"ADAS_ENV={env!r} is not one of {ENVIRONMENTS}")

    def store(self) -> RegistryStore:
        return open_registry(self.url)

    def policy(self) -> RegistryPolicy:
        return load_policy(self.policy_path or None)

    def trusted_keys_path(self) -> Path | None:
        return Path(self.trusted_keys) if self.trusted_keys else None

    def notifier(self) -> WebhookNotifier | None:
        if not self.webhook_url:
            return None
        return WebhookNotifier(self.webhook_url, self.webhook_secret, self.policy().webhook)

    def deliver(self) -> dict[str, int]:
        """Send every registry event not yet acknowledged to the webhook (if one is configured)."""
        return deliver(self.notifier(), self.store())

    def promotion(
        self, store: ArtifactStore, catalog: TargetCatalog | None, oci: OciRegistrySettings | None = None
    ) -> PromotionSettings:
        """What a promotion needs: this registry, the artifact store, the policy, the trust file,
        the OCI registry it deploys from."""
        return PromotionSettings(
            registry=self.store(),
            store=store,
            catalog=catalog,
            policy=self.policy(),
            trusted_keys=self.trusted_keys_path(),
            notifier=self.notifier(),
            workdir=Path(self.workdir) if self.workdir else None,
            iam_bucket=self.iam_bucket or None,
            iam_prefix=self.iam_prefix if self.iam_bucket else None,
            oci=oci,
        )
