"""Dagster resources that build the core artifact store (:mod:`adas.storage`).

They only carry configuration (shown in the UI) and build a store; every behaviour, hashing
and verification included, lives in the core. Assets take ``dg.ResourceParam[ArtifactStore]``.
"""

import dagster as dg
from dagster_aws.s3 import S3Resource

from adas.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore


class LocalArtifactStoreResource(dg.ConfigurableResource):
    """Artifacts under a local folder (default ``$ADAS_HOME/artifacts``)."""

    root: str

    def create_resource(self, context: dg.InitResourceContext) -> ArtifactStore:
        return LocalArtifactStore(self.root)


class S3ArtifactStoreResource(dg.ConfigurableResource):
    """Artifacts in ``s3://bucket/prefix/``; the sha256 travels in object metadata."""

    s3: S3Resource
    bucket: str
    prefix: str = ""
    cache_dir: str = "/tmp/adas-artifact-cache"

    def create_resource(self, context: dg.InitResourceContext) -> ArtifactStore:
        return S3ArtifactStore(self.s3.get_client, self.bucket, self.prefix, self.cache_dir)


# How an asset, check or sensor asks for the store: the factory resources above hand it the
# core object, so Dagster needs the parameter typed as a plain resource value.
ArtifactStoreParam = dg.ResourceParam[ArtifactStore]
