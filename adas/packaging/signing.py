"""Signatures of a model pack: cosign-format signatures per file and a signed manifest.

Every file ``f`` of a pack gets ``f.sig``: the base64 of the DER-encoded ECDSA-SHA256 signature
over the file's raw bytes, exactly what ``cosign sign-blob --key`` writes. The pack root gets
``cosign.pub``, the signer's public key: a convenience for ``cosign verify-blob``, never trusted
by our verification (whoever can rewrite a pack can rewrite its key). Then ``pack_manifest.json``
lists every file (data, signatures, ``cosign.pub``) with its sha256, the signing key's id and
the signing time, and ``pack_manifest.json.sig`` signs the manifest.

The manifest signature is the root of a pack's integrity: :func:`check_pack` verifies it with a
key of the trust root (:mod:`adas.packaging.trust`) that was valid at the stated signing time,
then every file against the manifest's sha256, no file missing and none added. So
``inference_config.json``, the manifest and every other byte are covered. Anyone can check
without our code: ``cosign verify-blob --key <trusted PEM> --signature pack_manifest.json.sig
pack_manifest.json``, then ``sha256sum`` against the manifest (or each file's own ``.sig``).

Signatures are deterministic (RFC 6979): one key over the same bytes always gives the same
signature, so re-signing unchanged files changes no byte.

Key custody: locally ``adas-registry keys init`` creates a PEM key (mode 0600) under the key
directory and enrols its public key in the local trust file; nothing creates a key on use. In
production ``ADAS_SIGNING_KEY`` names a PEM file mounted from a secret store. A KMS-held key sits
behind the same :class:`Signer` interface: AWS KMS ``Sign(MessageType="DIGEST",
SigningAlgorithm="ECDSA_SHA_256")`` on an ``ECC_NIST_P256`` key returns the same DER signature
over the same SHA-256 digest (KMS signatures are randomized: they still verify).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from adas.packaging.trust import TrustFile, UntrustedKeyError, now_utc, public_key_id
from adas.storage import sha256_file

SIGNING_KEY_ENV = "ADAS_SIGNING_KEY"
SIGNING_KEY_PASSWORD_ENV = "ADAS_SIGNING_KEY_PASSWORD"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "cosign.pub"
SIG_SUFFIX = ".sig"
MANIFEST_FILE = "pack_manifest.json"
MANIFEST_SIGNATURE = f"{MANIFEST_FILE}{SIG_SUFFIX}"
MANIFEST_SCHEMA = 2
SIGNATURE_ALGORITHM = "ECDSA-P256-SHA256"
# Signing happens over a streamed digest (engines can be larger than we want in memory), with
# RFC 6979 nonces: the same key over the same bytes gives byte-identical signatures.
_ECDSA_SIGN = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
_ECDSA_VERIFY = ec.ECDSA(Prehashed(hashes.SHA256()))
_NO_KEY_HINT = "run `adas-registry keys init` (local) or set ADAS_SIGNING_KEY (production)"


class SignatureError(Exception):
    """A pack's signature is missing, malformed, untrusted or does not match; the message names it."""


class Signer(Protocol):
    """What signing needs from a key: a local PEM key here, a KMS key in production."""

    @property
    def key_id(self) -> str: ...

    def sign_digest(self, digest: bytes) -> bytes:
        """DER-encoded ECDSA P-256 signature over a SHA-256 digest."""
        ...

    def public_key_pem(self) -> bytes: ...


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    path: Path | None = None

    def sign_digest(self, digest: bytes) -> bytes:
        return self.private_key.sign(digest, _ECDSA_SIGN)

    def public_key_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def key_id(self) -> str:
        """SHA-256 of the DER public key: how the trust root and the manifest name the key."""
        return public_key_id(self.public_key_pem())


def _password() -> bytes | None:
    value = os.environ.get(SIGNING_KEY_PASSWORD_ENV)
    return value.encode() if value else None


def load_key_file(path: Path) -> SigningKey:
    """The P-256 private key in the PEM file ``path``."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=_password())
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path}: not a usable PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError(f"{path}: signing key must be ECDSA P-256 (what cosign generates)")
    return SigningKey(key, path)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_signing_key(key_dir: Path | None = None) -> SigningKey:
    """The signing key: ``$ADAS_SIGNING_KEY`` if set, else ``key_dir/signing-key.pem``.

    Never generated here: a missing key is an error that says how to create one (locally
    ``adas-registry keys init``, which also enrols it in the trust root).
    """
    env_path = os.environ.get(SIGNING_KEY_ENV)
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise SignatureError(f"{SIGNING_KEY_ENV}={path}: file not found")
        return load_key_file(path)
    if key_dir is None:
        raise SignatureError(f"no key directory given and {SIGNING_KEY_ENV} is not set")
    path = Path(key_dir) / PRIVATE_KEY_FILE
    if not path.is_file():
        raise SignatureError(f"{path}: no signing key: {_NO_KEY_HINT}")
    return load_key_file(path)


def create_signing_key(path: Path) -> SigningKey:
    """Generate a P-256 key at ``path`` (0600); FileExistsError if one is there (never replaced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)  # fails if another process created the key meanwhile
    finally:
        Path(tmp).unlink(missing_ok=True)
    return load_key_file(path)


def _digest(path: Path) -> bytes:
    """The SHA-256 a signature covers (the key signs the digest, not the file)."""
    return bytes.fromhex(sha256_file(Path(path))[0])


def sign_blob(key: Signer, path: Path) -> str:
    """cosign ``sign-blob`` signature of a file: base64(DER ECDSA-SHA256 over its bytes)."""
    return base64.b64encode(key.sign_digest(_digest(path))).decode("ascii")


def load_public_key(public_key_pem: bytes | str) -> ec.EllipticCurvePublicKey:
    data = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise SignatureError(f"not a PEM public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SignatureError("public key must be ECDSA P-256")
    return key


def verify_blob(public_key: ec.EllipticCurvePublicKey | bytes | str, path: Path, signature_b64: str) -> None:
    """Raise :class:`SignatureError` naming ``path`` unless the signature is valid for it."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        public_key = load_public_key(public_key)
    try:
        der = base64.b64decode("".join(signature_b64.split()), validate=True)
        decode_dss_signature(der)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError(
            f"{path}: malformed signature (expected base64 of a DER ECDSA signature)"
        ) from exc
    try:
        public_key.verify(der, _digest(path), _ECDSA_VERIFY)
    except InvalidSignature as exc:
        raise SignatureError(f"{path}: signature does not match the file (modified after signing?)") from exc


def verify_blob_bytes(public_key: ec.EllipticCurvePublicKey, data: bytes, signature_b64: str) -> None:
    """:func:`verify_blob` over bytes in memory (a signature payload fetched from a registry)."""
    try:
        der = base64.b64decode("".join(signature_b64.split()), validate=True)
        decode_dss_signature(der)
        public_key.verify(der, hashlib.sha256(data).digest(), _ECDSA_VERIFY)
    except (binascii.Error, ValueError) as exc:
        raise SignatureError("malformed signature (expected base64 of a DER ECDSA signature)") from exc
    except InvalidSignature as exc:
        raise SignatureError("signature does not match the signed bytes") from exc


def _looks_like_private_key(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(64)
    return head.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in head


def _all_files(pack_dir: Path) -> list[str]:
    return sorted(p.relative_to(pack_dir).as_posix() for p in pack_dir.rglob("*") if p.is_file())


def listed_files(pack_dir: Path) -> list[str]:
    """Files the manifest lists: every file of the pack but the manifest and its signature."""
    return [rel for rel in _all_files(Path(pack_dir)) if rel not in (MANIFEST_FILE, MANIFEST_SIGNATURE)]


def pack_files(pack_dir: Path) -> list[str]:
    """Files of a pack that carry a ``.sig`` of their own, as sorted POSIX paths relative to the pack."""
    return [rel for rel in listed_files(pack_dir) if not rel.endswith(SIG_SUFFIX) and rel != PUBLIC_KEY_FILE]


def sign_pack(
    pack_dir: Path,
    key: Signer,
    manifest_fields: Mapping[str, Any] | None = None,
    signed_at: datetime | None = None,
) -> dict[str, Any]:
    """Sign every file of the pack, then write and sign ``pack_manifest.json``; return the manifest.

    Writes ``<file>.sig`` per file and ``cosign.pub``; signatures left over from files no longer
    in the pack are removed. ``manifest_fields`` (model, target, ...) go into the manifest
    beside ``schema_version``, ``signing`` (key id, signing time, algorithm) and ``files``.
    """
    pack_dir = Path(pack_dir)
    if not pack_dir.is_dir():
        raise SignatureError(f"{pack_dir}: pack directory not found")
    for stale in (MANIFEST_FILE, MANIFEST_SIGNATURE):
        (pack_dir / stale).unlink(missing_ok=True)
    files = pack_files(pack_dir)
    if not files:
        raise SignatureError(f"{pack_dir}: pack has no files to sign")
    for rel in files:
        # A private key inside a pack would be published with it: refuse loudly.
        if _looks_like_private_key(pack_dir / rel):
            raise SignatureError(f"{rel}: refusing to sign a pack that contains a private key")
    wanted = {f"{rel}{SIG_SUFFIX}" for rel in files}
    for sig in pack_dir.rglob(f"*{SIG_SUFFIX}"):
        if sig.is_file() and sig.relative_to(pack_dir).as_posix() not in wanted:
            sig.unlink()
    for rel in files:
        # No trailing newline: byte-identical to `cosign sign-blob --output-signature`.
        _write_atomic(pack_dir / f"{rel}{SIG_SUFFIX}", sign_blob(key, pack_dir / rel).encode("ascii"), 0o644)
    _write_atomic(pack_dir / PUBLIC_KEY_FILE, key.public_key_pem(), 0o644)
    manifest = {
        **(manifest_fields or {}),
        "schema_version": MANIFEST_SCHEMA,
        "signing": {
            "key_id": key.key_id,
            "signed_at": (signed_at or now_utc()).isoformat(),
            "algorithm": SIGNATURE_ALGORITHM,
        },
        "files": {rel: sha256_file(pack_dir / rel)[0] for rel in listed_files(pack_dir)},
    }
    _write_atomic(pack_dir / MANIFEST_FILE, json.dumps(manifest, indent=2, sort_keys=True).encode(), 0o644)
    signature = sign_blob(key, pack_dir / MANIFEST_FILE)
    _write_atomic(pack_dir / MANIFEST_SIGNATURE, signature.encode("ascii"), 0o644)
    return manifest


@dataclass
class PackCheck:
    """What :func:`check_pack` found: the signer, the files proven, every problem (none = valid)."""

    key_id: str | None = None
    signed_at: datetime | None = None
    files: list[str] = field(default_factory=list)  # sha256 equal to the trusted manifest's
    signed: list[str] = field(default_factory=list)  # own .sig verified with the trusted key
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.files)


def _signed_manifest(
    pack_dir: Path, trust: TrustFile, out: PackCheck
) -> tuple[dict[str, Any], ec.EllipticCurvePublicKey] | None:
    """The manifest and the trusted key that signed it, or None with the reason in ``out``."""
    manifest_path, sig_path = pack_dir / MANIFEST_FILE, pack_dir / MANIFEST_SIGNATURE
    if not manifest_path.is_file():
        out.problems.append(f"{MANIFEST_FILE} is missing: the pack is incomplete")
        return None
    if not sig_path.is_file():
        out.problems.append(
            f"{MANIFEST_FILE} is not signed ({MANIFEST_SIGNATURE} missing): nothing vouches for the pack"
        )
        return None
    try:
        manifest = json.loads(manifest_path.read_bytes())
        signing = manifest["signing"]
        out.key_id = str(signing["key_id"])
        signed_at = datetime.fromisoformat(str(signing["signed_at"]))
        files = manifest["files"]
        if signed_at.tzinfo is None or not isinstance(files, dict):
            raise ValueError("signing time without a time zone, or files not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        out.problems.append(f"{MANIFEST_FILE}: not a signed pack manifest ({exc!r})")
        return None
    out.signed_at = signed_at
    try:
        trusted = trust.signer(out.key_id, signed_at)
    except UntrustedKeyError as exc:
        out.problems.append(f"{MANIFEST_FILE}: {exc}")
        return None
    try:
        verify_blob(trusted.public_key, manifest_path, sig_path.read_text(encoding="ascii"))
    except (SignatureError, UnicodeDecodeError):
        out.problems.append(
            f"{MANIFEST_FILE}: signature does not match trusted key {out.key_id} (manifest modified after signing?)"
        )
        return None
    return manifest, load_public_key(trusted.public_key)


def check_pack(pack_dir: Path, trust: TrustFile, refused: Collection[str] = ()) -> PackCheck:
    """Verify a pack in ``pack_dir`` against the trust root; every problem is collected.

    The manifest's signature must verify with a trusted key valid at the stated signing time
    (else nothing else is looked at: an untrusted manifest proves nothing). Then every file's
    sha256 must equal the manifest's, no listed file may be missing and no unlisted one present,
    and every file's own ``.sig`` must verify with that same key. ``refused`` names files the
    caller already refused (and left out of ``pack_dir``): they are not reported twice.
    """
    pack_dir = Path(pack_dir)
    refused = set(refused)
    out = PackCheck()
    signed = _signed_manifest(pack_dir, trust, out)
    if signed is None:
        return out
    manifest, public_key = signed
    listed: dict[str, str] = manifest["files"]
    present = set(listed_files(pack_dir))
    for rel in sorted(set(listed) - present - refused):
        out.problems.append(f"{rel}: listed in the signed manifest but missing from the pack")
    for rel in sorted(present - set(listed)):
        out.problems.append(f"{rel}: not in the signed manifest (added after signing)")
    for rel in sorted(set(listed) & present):
        actual = sha256_file(pack_dir / rel)[0]
        if actual == listed[rel]:
            out.files.append(rel)
        else:
            out.problems.append(f"{rel}: sha256 {actual} differs from the signed manifest's {listed[rel]}")
    for rel in pack_files(pack_dir):
        sig = pack_dir / f"{rel}{SIG_SUFFIX}"
        if f"{rel}{SIG_SUFFIX}" in refused:
            continue
        if not sig.is_file():
            out.problems.append(f"{rel}: signature file {rel}{SIG_SUFFIX} is missing")
            continue
        try:
            verify_blob(public_key, pack_dir / rel, sig.read_text(encoding="ascii"))
            out.signed.append(rel)
        except UnicodeDecodeError:
            out.problems.append(f"{rel}: malformed signature (not base64 text)")
        except SignatureError as exc:
            out.problems.append(str(exc).replace(str(pack_dir / rel), rel, 1))
    return out


def verify_pack(pack_dir: Path, trust: TrustFile) -> list[str]:
    """:func:`check_pack`, raising :class:`SignatureError` with every problem; returns the
    files proven against the signed manifest."""
    result = check_pack(pack_dir, trust)
    if result.problems:
        raise SignatureError("; ".join(result.problems))
    if not result.files:
        raise SignatureError(f"{pack_dir}: pack has no files")
    return result.files
