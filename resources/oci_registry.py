"""The ``oci_registry`` resource: where model packs are published as OCI artifacts.

The settings and the client they build are the core's
:class:`adas.packaging.oci_settings.OciRegistrySettings`; this resource only makes them Dagster
configuration. The production URL is named as a variable (``dg.EnvVar``); credentials are never
configuration at all: the client reads ``ADAS_OCI_*`` from the environment at each use.
"""

import dataclasses

import dagster as dg
from pydantic import Field

from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_settings import DEFAULT_LOCAL_PORT, OciRegistrySettings
from adas.settings import AdasHome


class OciRegistryResource(dg.ConfigurableResource):
    """An OCI registry (Distribution API): the local daemon, or ECR / Harbor / Artifactory."""

    url: str = Field(
        default="", description="registry URL in production (https://host); empty: the local registry"
    )
    local_root: str = Field(
        default="", description="local registry's directory (config, storage, pid file, log)"
    )
    local_port: int = Field(
        default=DEFAULT_LOCAL_PORT, description="local registry's port on 127.0.0.1 (ADAS_OCI_REGISTRY_PORT)"
    )
    namespace: str = Field(default="", description="repository prefix (ADAS_OCI_NAMESPACE), e.g. an ECR path")

    def core(self) -> OciRegistrySettings:
        """These settings as the core's (Dagster-free) OCI registry settings."""
        return OciRegistrySettings(
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(OciRegistrySettings)}
        )

    def client(self) -> RegistryClient:
        return self.core().client()


def oci_registry_resource(env: str, home: AdasHome | None = None) -> OciRegistryResource:
    """The OCI registry resource for ``env`` (called from ``resources.build_resources``)."""
    settings = OciRegistrySettings.from_env(env, home)
    from_env = {name: dg.EnvVar(var) for name, var in OciRegistrySettings.env_fields(env).items()}
    return OciRegistryResource(**{**dataclasses.asdict(settings), **from_env})
