"""The trust root: which public keys verification trusts, and for which signing times.

A small versioned YAML file (``trusted_keys.yaml``, schema below) lists every trusted key: its
id (sha256 of the DER SubjectPublicKeyInfo, what :attr:`SigningKey.key_id` prints), its PEM, the
window in which its signatures count (``not_before`` inclusive, ``not_after`` exclusive, open
when absent) and whether it is revoked. Pack verification (governance, promotion, rollback,
``adas-registry verify``) trusts these keys and nothing else: never a key derived from a private
key at run time, never the ``cosign.pub`` a pack ships with.

Where the file lives: ``$ADAS_TRUSTED_KEYS`` when set; else in production
``config/trusted_keys.yaml`` (reviewed in this repository like all configuration, shipped with
the code), locally ``$ADAS_HOME/keys/trusted_keys.yaml`` (written by ``adas-registry keys init``
and ``keys rotate``).

Expiry and revocation differ on purpose: a key past ``not_after`` still vouches for what it
signed inside its window (old packs keep verifying after a rotation), a revoked key vouches for
nothing (a leaked key). The signing time is the one the signed manifest states.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import ConfigError, load_yaml_model
from adas.settings import CONFIG_DIR, AdasHome

TRUSTED_KEYS_ENV = "ADAS_TRUSTED_KEYS"
TRUST_FILE = "trusted_keys.yaml"


class UntrustedKeyError(ValueError):
    """A signature by a key the trust root does not vouch for at that time; names the key id."""


def public_key_id(public_key_pem: bytes | str) -> str:
    """sha256 (hex) of the DER SubjectPublicKeyInfo of a P-256 public key in PEM."""
    data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("public key must be ECDSA P-256 (what cosign generates)")
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


class TrustedKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key_id: str = Field(pattern=r"^[0-9a-f]{64}$")
    public_key: str = Field(description="PEM SubjectPublicKeyInfo (P-256)")
    not_before: AwareDatetime
    not_after: AwareDatetime | None = None
    revoked: bool = False
    comment: str = ""

    @field_validator("public_key")
    @classmethod
    def _pem(cls, value: str) -> str:
        public_key_id(value)  # raises naming what is wrong with it
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrustedKey:
        actual = public_key_id(self.public_key)
        if actual != self.key_id:
            raise ValueError(f"key_id {self.key_id} is not the sha256 of public_key's DER ({actual})")
        if self.not_after is not None and self.not_after < self.not_before:
            raise ValueError(f"not_after {self.not_after} is before not_before {self.not_before}")
        return self

    def state(self, at: datetime) -> str:
        """``valid``, ``revoked``, ``expired`` or ``not yet valid`` for a signature made at ``at``."""
        if self.revoked:
            return "revoked"
        if at < self.not_before:
            return "not yet valid"
        if self.not_after is not None and at >= self.not_after:
            return "expired"
        return "valid"

    def window(self) -> str:
        end = self.not_after.isoformat() if self.not_after else "open"
        return f"{self.not_before.isoformat()} .. {end}"


class TrustRoot(BaseModel):
    """The contents of ``trusted_keys.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    keys: list[TrustedKey] = []

    @model_validator(mode="after")
    def _unique(self) -> TrustRoot:
        ids = [k.key_id for k in self.keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"key ids listed more than once: {', '.join(duplicates)}")
        return self

    def get(self, key_id: str) -> TrustedKey | None:
        return next((k for k in self.keys if k.key_id == key_id), None)

    def signer(self, key_id: str, signed_at: datetime, source: str = "the trust root") -> TrustedKey:
        """The trusted key ``key_id`` if it vouches for a signature made at ``signed_at``; else
        :class:`UntrustedKeyError` naming the key id and the reason."""
        key = self.get(key_id)
        if key is None:
            raise UntrustedKeyError(f"signed by key {key_id}, which is not in {source}")
        state = key.state(signed_at)
        if state == "revoked":
            raise UntrustedKeyError(f"signed by key {key_id}, which is revoked in {source}")
        if state != "valid":
            raise UntrustedKeyError(
                f"signed by key {key_id} at {signed_at.isoformat()}, outside its validity window "
                f"({key.window()}) in {source}"
            )
        return key


@dataclass(frozen=True)
class TrustFile:
    """A trust root and the file it was read from (named in every refusal)."""

    path: Path
    root: TrustRoot

    def signer(self, key_id: str, signed_at: datetime) -> TrustedKey:
        return self.root.signer(key_id, signed_at, source=str(self.path))


def trust_file_path(home: AdasHome | None = None, env: str | None = None) -> Path:
    """``$ADAS_TRUSTED_KEYS`` when set; else in production ``config/trusted_keys.yaml`` (reviewed
    in this repository, shipped with the code), locally ``$ADAS_HOME/keys/trusted_keys.yaml``."""
    explicit = os.environ.get(TRUSTED_KEYS_ENV)
    if explicit:
        return Path(explicit)
    if (env or os.environ.get("ADAS_ENV", "local")) == "production":
        return CONFIG_DIR / TRUST_FILE
    return (home or AdasHome.from_env()).keys / TRUST_FILE


def load_trust_file(path: Path) -> TrustFile:
    """Read and validate a trust file; :class:`adas.config_errors.ConfigError` names file and field."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{path}: no trust file: run `adas-registry keys init` (local), or point "
            f"{TRUSTED_KEYS_ENV} at the reviewed trust file (production)"
        )
    return TrustFile(path, load_yaml_model(path, TrustRoot))


class _LiteralDumper(yaml.SafeDumper):
    """PEM blocks as YAML literal blocks, readable in review."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_LiteralDumper.add_representer(str, _str)

_HEADER = """\
# Trusted signing keys (schema: adas/packaging/trust.py). Verification trusts these and nothing
# else. key_id = sha256 of the DER public key. A signature counts when the signed manifest's
# signed_at lies in [not_before, not_after); revoked: true refuses everything the key signed.
"""


def write_trust_file(path: Path, root: TrustRoot) -> None:
    """Write atomically (readers see the old file or the new one), 0644."""
    body: dict[str, Any] = root.model_dump(mode="json", exclude_defaults=False)
    text = _HEADER + yaml.dump(body, Dumper=_LiteralDumper, sort_keys=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def enrolled(root: TrustRoot, public_key_pem: bytes, not_before: datetime, comment: str) -> TrustRoot:
    """``root`` with the key added (valid from ``not_before``, open-ended)."""
    key = TrustedKey(
        key_id=public_key_id(public_key_pem),
        public_key=public_key_pem.decode("ascii"),
        not_before=not_before,
        comment=comment,
    )
    if root.get(key.key_id) is not None:
        raise ValueError(f"key {key.key_id} is already in the trust root")
    return root.model_copy(update={"keys": [*root.keys, key]})


def retired(root: TrustRoot, key_id: str, not_after: datetime) -> TrustRoot:
    """``root`` with ``key_id``'s window closed at ``not_after`` (kept if it already ended earlier)."""
    keys = []
    for k in root.keys:
        if k.key_id == key_id and (k.not_after is None or k.not_after > not_after):
            k = k.model_copy(update={"not_after": max(not_after, k.not_before)})
        keys.append(k)
    return root.model_copy(update={"keys": keys})


def now_utc() -> datetime:
    return datetime.now(UTC)
