"""The ``registry`` resource: which registry database, which trusted keys, which webhook.

The settings and what they build (the store, the policy, the notifier, a promotion's
settings) are the core's :class:`adas.registry.settings.RegistrySettings`, which the
``adas-registry`` CLI reads too; this resource only makes them Dagster configuration. Where
a value comes from an environment variable (the production database and trust file, the webhook),
the resource names the variable (``dg.EnvVar``), so the UI never shows the value.
"""

import dataclasses

import dagster as dg
from pydantic import Field

from adas.packaging.oci_settings import OciRegistrySettings
from adas.registry.config import RegistryPolicy
from adas.registry.settings import PromotionSettings, RegistrySettings
from adas.registry.store import RegistryStore
from adas.registry.webhook import WebhookNotifier
from adas.settings import AdasHome
from adas.storage import ArtifactStore
from resources.targets import TARGET_CATALOG


class RegistryResource(dg.ConfigurableResource):
    """The registry of truth and what promotions need around it."""

    url: str = Field(
        description="SQLAlchemy URL: sqlite:///... locally, postgresql+psycopg2://... in production"
    )
    trusted_keys: str = Field(
        default="",
        description="trust file (trusted_keys.yaml): the only public keys pack signatures are verified with",
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

    def core(self) -> RegistrySettings:
        """These settings as the core's (Dagster-free) registry settings."""
        return RegistrySettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(RegistrySettings)}
        )

    def store(self) -> RegistryStore:
        return self.core().store()

    def policy(self) -> RegistryPolicy:
        return self.core().policy()

    def notifier(self) -> WebhookNotifier | None:
        return self.core().notifier()

    def deliver(self) -> dict[str, int]:
        """Send every registry event not yet acknowledged to the webhook (if one is configured)."""
        return self.core().deliver()

    def settings(
        self, artifact_store: ArtifactStore, oci: OciRegistrySettings | None = None
    ) -> PromotionSettings:
        """A promotion's settings; ``oci``: the registry deployments pull pinned digests from."""
        return self.core().promotion(artifact_store, TARGET_CATALOG, oci)


def registry_resource(env: str, home: AdasHome | None = None) -> RegistryResource:
    """The registry resource for ``env`` (called from ``resources.build_resources``)."""
    settings = RegistrySettings.from_env(env, home)
    from_env = {name: dg.EnvVar(var) for name, var in RegistrySettings.env_fields(env).items()}
    return RegistryResource(**{**dataclasses.asdict(settings), **from_env})
