"""Which OCI registry model packs are published to: read in one place, for both environments.

Local (``ADAS_ENV=local``): Debian's ``docker-registry`` with its storage under
``$ADAS_HOME/oci-registry``, on ``127.0.0.1:$ADAS_OCI_REGISTRY_PORT`` (default 5123), started on
the first push when nothing answers there and left running for later runs
(:func:`adas.packaging.local_oci_registry.ensure_local_registry`), unless ``$ADAS_OCI_REGISTRY``
names another registry. Production: the registry at
``$ADAS_OCI_REGISTRY`` (ECR, Harbor, Artifactory: ``https://host``), repositories under
``$ADAS_OCI_NAMESPACE`` when set. Credentials come from the environment only
(``ADAS_OCI_USERNAME``/``ADAS_OCI_PASSWORD`` or ``ADAS_OCI_TOKEN``, read by
:meth:`adas.packaging.oci_client.RegistryClient.from_env` at each use), never from a setting.

The Dagster resource (``resources.oci_registry``) makes these settings Dagster configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from adas.packaging.local_oci_registry import ensure_local_registry
from adas.packaging.oci_client import OciError, RegistryClient
from adas.settings import AdasHome
from adas.storage import ENVIRONMENTS

REGISTRY_ENV = "ADAS_OCI_REGISTRY"
PORT_ENV = "ADAS_OCI_REGISTRY_PORT"
NAMESPACE_ENV = "ADAS_OCI_NAMESPACE"
LOCAL_HOST = "127.0.0.1"
DEFAULT_LOCAL_PORT = 5123


def local_port_from_env() -> int:
    raw = os.environ.get(PORT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCAL_PORT
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a TCP port")
    return int(raw)


@dataclass(frozen=True)
class OciRegistrySettings:
    """One OCI registry: ``url`` (production), or the local daemon of ``local_root``."""

    url: str = ""
    local_root: str = ""
    local_port: int = DEFAULT_LOCAL_PORT
    namespace: str = ""

    @staticmethod
    def env_fields(env: str) -> dict[str, str]:
        """``field -> environment variable`` of the fields ``env`` reads from variables (the
        Dagster resource names these variables instead of copying their values)."""
        return {"url": REGISTRY_ENV} if env == "production" or os.environ.get(REGISTRY_ENV) else {}

    @classmethod
    def from_env(cls, env: str | None = None, home: AdasHome | None = None) -> OciRegistrySettings:
        env = env or os.environ.get("ADAS_ENV", "local")
        namespace = os.environ.get(NAMESPACE_ENV, "").strip("/")
        if env == "local" and os.environ.get(REGISTRY_ENV):
            # Locally too, an explicit registry URL replaces the local daemon (a shared or test one).
            return cls(url=os.environ[REGISTRY_ENV], namespace=namespace)
        if env == "local":
            home = home or AdasHome.from_env()
            return cls(
                local_root=str(home.oci_registry), local_port=local_port_from_env(), namespace=namespace
            )
        if env == "production":
            return cls(url=os.environ.get(REGISTRY_ENV, ""), namespace=namespace)
        raise ValueError(f"ADAS_ENV={env!r} is not one of {ENVIRONMENTS}")

    def client(self, timeout_s: float = 60.0) -> RegistryClient:
        """A client of this registry; the local one is started first if nothing answers."""
        if self.url:
            return RegistryClient.from_env(self.url, timeout_s)
        if not self.local_root:
            raise OciError(f"no OCI registry configured: set {REGISTRY_ENV} (https://host of the registry)")
        local = ensure_local_registry(Path(self.local_root), self.local_port, LOCAL_HOST)
        # Loopback-only and unauthenticated: no credential is sent to it.
        return RegistryClient(local.url, None, timeout_s)
