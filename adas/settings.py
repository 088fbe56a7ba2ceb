"""Where the platform keeps its local state: everything lives under one ``ADAS_HOME``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "config"
DEMO_BUNDLES_DIR = REPO_ROOT / "demo" / "bundles"


@dataclass(frozen=True)
class AdasHome:
    """The directory layout under ``ADAS_HOME`` (default ``.adas/`` in the repository)."""

    root: Path

    @classmethod
    def from_env(cls) -> AdasHome:
        return cls(Path(os.environ.get("ADAS_HOME", REPO_ROOT / ".adas")).resolve())

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def rejected(self) -> Path:
        return self.inbox / "rejected"

    @property
    def accepted(self) -> Path:
        return self.inbox / "accepted"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def datasets_workdir(self) -> Path:
        """Scratch space for generators; what matters is copied into the artifact store."""
        return self.root / "work" / "datasets"

    @property
    def keys(self) -> Path:
        """Local signing key (production names one through ADAS_SIGNING_KEY)."""
        return self.root / "keys"

    @property
    def wandb(self) -> Path:
        return self.root / "wandb"

    @property
    def registry_db(self) -> Path:
        return self.root / "registry.db"

    @property
    def oci_registry(self) -> Path:
        """The local OCI registry (CNCF Distribution): its generated config and blob storage."""
        return self.root / "oci-registry"

    @property
    def logs(self) -> Path:
        """Output of local runs that would bury their summary (the demo's event stream)."""
        return self.root / "logs"

    def ensure(self) -> AdasHome:
        for path in (self.dagster_home, self.inbox, self.rejected, self.accepted, self.artifacts):
            path.mkdir(parents=True, exist_ok=True)
        return self
