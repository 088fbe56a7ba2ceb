"""The version claim that intake needs from a database, as a protocol intake owns.

Claiming ``task``/``version`` must be one atomic operation across processes and machines. The
registry database implements it (:meth:`adas.registry.store.RegistryStore.claim_version`: a
unique constraint on ``(task, version)``); intake sits below the registry in the core's layers,
so it names here what it calls and what a lost claim raises, and the registry implements both.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class VersionClaim:
    """Who holds ``task``/``version`` (build metadata stripped) with which bundle, since when."""

    task: str
    version: str
    bundle_sha256: str
    claimer: str
    claimed_at: datetime


class VersionTaken(RuntimeError):
    """A claim lost: another bundle holds the version (``holder`` names it)."""

    def __init__(self, message: str, holder: VersionClaim) -> None:
        super().__init__(message)
        self.holder = holder


class VersionClaims(Protocol):
    """Atomic version claims, as the registry database offers them."""

    def claim_version(self, task: str, version: str, bundle_sha256: str, claimer: str) -> VersionClaim:
        """Claim, or return the existing claim of the same bytes; raise :class:`VersionTaken`
        if a different bundle holds the version."""
        ...

    def version_claim(self, task: str, version: str) -> VersionClaim | None:
        """The claim on ``task``/``version``, or None if it is free."""
        ...
