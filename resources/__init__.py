"""Resources, chosen per environment in one place.

``ADAS_ENV=local`` (default): artifacts and inbox under ``ADAS_HOME``, SQLite instance.
``ADAS_ENV=production``: S3 artifacts and inbox (bucket from ``ADAS_ARTIFACT_BUCKET``),
PostgreSQL instance storage configured in ``deploy/dagster.yaml``.
"""

import os
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource

from adas_assets.registry.resource import registry_resource
from adas_assets.settings import AdasHome
from resources.artifact_store import ArtifactStore, LocalArtifactStore, S3ArtifactStore
from resources.inbox import Inbox, LocalInbox, S3Inbox
from resources.io_manager import ArtifactJsonIOManager

ENVIRONMENTS = ("local", "production")


def build_resources(env: str | None = None, home: AdasHome | None = None) -> dict[str, Any]:
    env = env or os.environ.get("ADAS_ENV", "local")
    if env == "local":
        home = home or AdasHome.from_env()
        store: ArtifactStore = LocalArtifactStore(root=str(home.artifacts))
        inbox: Inbox = LocalInbox(path=str(home.inbox))
    elif env == "production":
        s3 = S3Resource(
            region_name=dg.EnvVar("AWS_REGION"),
            endpoint_url=os.environ.get("ADAS_S3_ENDPOINT_URL") or None,
        )
        bucket = dg.EnvVar("ADAS_ARTIFACT_BUCKET")
        store = S3ArtifactStore(s3=s3, bucket=bucket, prefix=os.environ.get("ADAS_ARTIFACT_PREFIX", "gold"))
        inbox = S3Inbox(s3=s3, bucket=bucket, prefix=os.environ.get("ADAS_INBOX_PREFIX", "inbox"))
    else:
        raise ValueError(f"ADAS_ENV={env!r} is not one of {ENVIRONMENTS}")
    return {
        "artifact_store": store,
        "inbox": inbox,
        "io_manager": ArtifactJsonIOManager(store=store),
        "registry": registry_resource(env, home),
    }
