"""Dagster resources that build the core artifact store (:mod:`adas.storage`).

They only carry configuration (shown in the UI) and build a store; every behaviour, hashing
and verification included, lives in the core. Assets take ``dg.ResourceParam[ArtifactStore]``.
"""

from functools import partial

import dagster as dg
from dagster_aws.s3 import S3Resource

from adas.storage import ArtifactStore, LocalArtifactStore, S3ArtifactStore, load_storage_config, s3_client


class LocalArtifactStoreResource(dg.ConfigurableResource):
    """Artifacts under a local folder (default ``$ADAS_HOME/artifacts``)."""

    root: str

    def create_resource(self, context: dg.InitResourceContext) -> ArtifactStore:
        return LocalArtifactStore(self.root)


class S3ArtifactStoreResource(dg.ConfigurableResource):
    """Artifacts in ``s3://bucket/prefix/``; the sha256 travels in object metadata.

    ``s3`` says where S3 is and who we are (region, endpoint, credentials); how the client
    retries and times out comes from ``config/storage.yaml`` (:func:`adas.storage.s3_client`),
    not from ``s3.max_attempts``.
    """

    s3: S3Resource
    bucket: str
    prefix: str = ""
    cache_dir: str = "/tmp/adas-artifact-cache"

    def create_resource(self, context: dg.InitResourceContext) -> ArtifactStore:
        s3 = self.s3
        client = partial(
            s3_client,
            load_storage_config().s3,
            profile_name=s3.profile_name,
            region_name=s3.region_name,
            endpoint_url=s3.endpoint_url,
            use_ssl=s3.use_ssl,
            verify=s3.verify,
            aws_access_key_id=s3.aws_access_key_id,
            aws_secret_access_key=s3.aws_secret_access_key,
            aws_session_token=s3.aws_session_token,
        )
        return S3ArtifactStore(client, self.bucket, self.prefix, self.cache_dir)


# How an asset, check or sensor asks for the store: the factory resources above hand it the
# core object, so Dagster needs the parameter typed as a plain resource value.
ArtifactStoreParam = dg.ResourceParam[ArtifactStore]
