"""The local signing key's life: ``adas-registry keys init`` and ``adas-registry keys rotate``.

``init`` creates ``$ADAS_HOME/keys/signing-key.pem`` if missing and enrols its public key in the
trust file, valid from now; run again it changes nothing. ``rotate`` creates a new key, enrols it
valid from now, closes the old key's window now and replaces the old private key: packs the old
key signed keep verifying (their signing time lies inside its window), new packs carry the new
key id, and nothing can sign with the old key any more.

Both are explicit operator steps (the local setup runs ``init``); nothing creates or enrols a key
as a side effect of packing or verifying. Production keys are never made here: the private key
lives in a secret store or KMS (``ADAS_SIGNING_KEY``) and its public key enters the reviewed trust
file by a change request (README, "Signing keys and rotation").
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from adas.packaging.signing import (
    PRIVATE_KEY_FILE,
    SignatureError,
    SigningKey,
    create_signing_key,
    load_key_file,
)
from adas.packaging.trust import (
    TrustRoot,
    UntrustedKeyError,
    enrolled,
    load_trust_file,
    now_utc,
    retired,
    write_trust_file,
)

NEXT_SUFFIX = ".next"


@dataclass(frozen=True)
class KeyChange:
    """What init or rotate did: the key that signs from now on, and what changed."""

    key_id: str
    key_file: Path
    trust_file: Path
    created: bool
    enrolled: bool
    retired_key_id: str | None = None

    def summary(self) -> str:
        done = [
            "created the signing key" if self.created else "signing key present",
            f"enrolled it in {self.trust_file}" if self.enrolled else f"already trusted in {self.trust_file}",
        ]
        if self.retired_key_id:
            done.append(f"retired key {self.retired_key_id} (its packs still verify)")
        return f"key {self.key_id}: " + "; ".join(done)


def _trust_root(trust_file: Path) -> TrustRoot:
    return load_trust_file(trust_file).root if trust_file.exists() else TrustRoot(version=1)


def _existing_or_new(path: Path) -> tuple[SigningKey, bool]:
    if path.exists():
        return load_key_file(path), False
    try:
        return create_signing_key(path), True
    except FileExistsError:  # another process made it meanwhile: theirs it is
        return load_key_file(path), False


def init_local_keys(key_dir: Path, trust_file: Path, now: datetime | None = None) -> KeyChange:
    """Ensure the local signing key exists and the trust file vouches for it from now on."""
    now = now or now_utc()
    path = Path(key_dir) / PRIVATE_KEY_FILE
    key, created = _existing_or_new(path)
    root = _trust_root(trust_file)
    enrol = root.get(key.key_id) is None
    if enrol:
        write_trust_file(trust_file, enrolled(root, key.public_key_pem(), now, "local key (keys init)"))
    else:
        try:
            root.signer(key.key_id, now, source=str(trust_file))
        except UntrustedKeyError as exc:
            raise SignatureError(
                f"{path}: this key cannot sign now ({exc}): run `adas-registry keys rotate`"
            ) from exc
    return KeyChange(key.key_id, path, trust_file, created, enrol)


def rotate_local_keys(key_dir: Path, trust_file: Path, now: datetime | None = None) -> KeyChange:
    """Replace the local signing key by a new one; see the module docstring.

    Order makes an interrupted rotation safe to run again: the new key is written beside the
    old (``signing-key.pem.next``), the trust file then enrols it and closes the old window in
    one atomic write, and only then does the new key replace the old one.
    """
    now = now or now_utc()
    path = Path(key_dir) / PRIVATE_KEY_FILE
    if not path.is_file():
        raise SignatureError(f"{path}: no signing key to rotate: run `adas-registry keys init`")
    if not trust_file.is_file():
        raise SignatureError(f"{trust_file}: no trust file: run `adas-registry keys init`")
    old = load_key_file(path)
    new, _ = _existing_or_new(path.with_name(path.name + NEXT_SUFFIX))
    root = load_trust_file(trust_file).root
    if root.get(new.key_id) is None:
        root = enrolled(
            root, new.public_key_pem(), now, f"local key (keys rotate, replaces {old.key_id[:12]})"
        )
    write_trust_file(trust_file, retired(root, old.key_id, now))
    os.replace(path.with_name(path.name + NEXT_SUFFIX), path)
    return KeyChange(new.key_id, path, trust_file, True, True, retired_key_id=old.key_id)
