"""Detached ECDSA P-256 signatures over the files of a model pack, in cosign's blob format.

Every file ``f`` of a pack gets ``f.sig`` next to it: the base64 of the DER-encoded
ECDSA-SHA256 signature over the file's raw bytes, and the pack root gets ``cosign.pub`` (PEM
SubjectPublicKeyInfo). That is exactly what ``cosign sign-blob --key`` writes, so anyone can
check a file with ``cosign verify-blob --key cosign.pub --signature f.sig f`` (or with
``openssl dgst -sha256 -verify cosign.pub -signature <decoded sig> f``) without our code.

Key custody: locally a PEM key is generated once (mode 0600) under the key directory. In
production ``ADAS_SIGNING_KEY`` names a PEM file mounted from a secret store, and is never
generated. A KMS-held key sits behind the same :class:`Signer` interface: AWS KMS
``Sign(MessageType="DIGEST", SigningAlgorithm="ECDSA_SHA_256")`` on an ``ECC_NIST_P256`` key
returns the same DER signature over the same SHA-256 digest, and ``GetPublicKey`` gives the
SPKI for ``cosign.pub`` (cosign also verifies against ``awskms://`` keys directly). To sign
with the cosign CLI instead, import our PEM key with ``cosign import-key-pair --key``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature

from adas.storage import sha256_file

SIGNING_KEY_ENV = "ADAS_SIGNING_KEY"
SIGNING_KEY_PASSWORD_ENV = "ADAS_SIGNING_KEY_PASSWORD"
PRIVATE_KEY_FILE = "signing-key.pem"
PUBLIC_KEY_FILE = "cosign.pub"
SIG_SUFFIX = ".sig"
# Signing happens over a streamed digest: engines can be larger than we want in memory.
_ECDSA_PREHASHED = ec.ECDSA(Prehashed(hashes.SHA256()))


class SignatureError(Exception):
    """A pack file's signature is missing, malformed or does not match; the message names it."""


class Signer(Protocol):
    """What signing needs from a key: a local PEM key here, a KMS key in production."""

    def sign_digest(self, digest: bytes) -> bytes:
        """DER-encoded ECDSA P-256 signature over a SHA-256 digest."""
        ...

    def public_key_pem(self) -> bytes: ...


@dataclass(frozen=True)
class SigningKey:
    private_key: ec.EllipticCurvePrivateKey
    path: Path | None = None

    def sign_digest(self, digest: bytes) -> bytes:
        return self.private_key.sign(digest, _ECDSA_PREHASHED)

    def public_key_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    @property
    def key_id(self) -> str:
        """SHA-256 of the DER public key: a short handle for release notes and logs."""
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return hashlib.sha256(der).hexdigest()


def _password() -> bytes | None:
    value = os.environ.get(SIGNING_KEY_PASSWORD_ENV)
    return value.encode() if value else None


def _load_private_key(path: Path) -> SigningKey:
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


def load_or_create_signing_key(key_dir: Path | None = None) -> SigningKey:
    """The signing key: ``$ADAS_SIGNING_KEY`` if set, else ``key_dir/signing-key.pem``.

    A production key named by the environment must exist (a missing secret is an error, never
    a reason to mint a new key). Locally the key is generated on first use, written 0600 and
    published next to it as ``cosign.pub``.
    """
    env_path = os.environ.get(SIGNING_KEY_ENV)
    if env_path:
        path = Path(env_path)
        if not path.is_file():
            raise SignatureError(f"{SIGNING_KEY_ENV}={path}: file not found")
        return _load_private_key(path)
    if key_dir is None:
        raise SignatureError(f"no key directory given and {SIGNING_KEY_ENV} is not set")
    key_dir = Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    path = key_dir / PRIVATE_KEY_FILE
    if not path.exists():
        private = ec.generate_private_key(ec.SECP256R1())
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd, tmp = tempfile.mkstemp(dir=key_dir, prefix=".signing-key.", suffix=".tmp")  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(pem)
            # link() fails if another process created the key meanwhile: theirs wins, both
            # processes then sign with the same key.
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    key = _load_private_key(path)
    _write_atomic(key_dir / PUBLIC_KEY_FILE, key.public_key_pem(), 0o644)
    return key


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
        public_key.verify(der, _digest(path), _ECDSA_PREHASHED)
    except InvalidSignature as exc:
        raise SignatureError(f"{path}: signature does not match the file (modified after signing?)") from exc


def _looks_like_private_key(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(64)
    return head.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in head


def pack_files(pack_dir: Path) -> list[str]:
    """Files of a pack that carry a signature, as sorted POSIX paths relative to the pack."""
    pack_dir = Path(pack_dir)
    files = []
    for path in pack_dir.rglob("*"):
        rel = path.relative_to(pack_dir).as_posix()
        if not path.is_file() or path.name.endswith(SIG_SUFFIX) or rel == PUBLIC_KEY_FILE:
            continue
        files.append(rel)
    return sorted(files)


def sign_pack(pack_dir: Path, key: Signer) -> dict[str, str]:
    """Write ``<file>.sig`` for every file of the pack and ``cosign.pub`` at its root.

    Returns ``{relative path: base64 signature}``. Signatures left over from files that are no
    longer in the pack are removed, so re-signing after editing a pack verifies cleanly.
    """
    pack_dir = Path(pack_dir)
    if not pack_dir.is_dir():
        raise SignatureError(f"{pack_dir}: pack directory not found")
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
    signatures = {}
    for rel in files:
        signature = sign_blob(key, pack_dir / rel)
        # No trailing newline: byte-identical to `cosign sign-blob --output-signature`.
        _write_atomic(pack_dir / f"{rel}{SIG_SUFFIX}", signature.encode("ascii"), 0o644)
        signatures[rel] = signature
    _write_atomic(pack_dir / PUBLIC_KEY_FILE, key.public_key_pem(), 0o644)
    return signatures


def verify_pack(pack_dir: Path, public_key_pem: bytes | str | None = None) -> list[str]:
    """Check every file of the pack against its ``.sig``; return the verified relative paths.

    ``public_key_pem`` should be the key pinned by the caller (release config, registry). When
    omitted the pack's own ``cosign.pub`` is used, which proves integrity (nothing changed since
    signing) but not who signed: whoever can rewrite the pack can rewrite its key too.
    Raises :class:`SignatureError` naming the first file whose signature is missing, malformed
    or wrong, and for a signature whose file has disappeared.
    """
    pack_dir = Path(pack_dir)
    if public_key_pem is None:
        pub_path = pack_dir / PUBLIC_KEY_FILE
        if not pub_path.is_file():
            raise SignatureError(f"{pub_path}: public key missing and none was given")
        public_key_pem = pub_path.read_bytes()
    public_key = load_public_key(public_key_pem)
    files = pack_files(pack_dir)
    if not files:
        raise SignatureError(f"{pack_dir}: pack has no files")
    expected = {f"{rel}{SIG_SUFFIX}" for rel in files}
    for sig in sorted(pack_dir.rglob(f"*{SIG_SUFFIX}")):
        rel_sig = sig.relative_to(pack_dir).as_posix()
        if sig.is_file() and rel_sig not in expected:
            raise SignatureError(f"{rel_sig.removesuffix(SIG_SUFFIX)}: signed file is missing from the pack")
    for rel in files:
        sig_path = pack_dir / f"{rel}{SIG_SUFFIX}"
        if not sig_path.is_file():
            raise SignatureError(f"{rel}: signature file {rel}{SIG_SUFFIX} is missing")
        try:
            verify_blob(public_key, pack_dir / rel, sig_path.read_text(encoding="ascii"))
        except UnicodeDecodeError as exc:
            raise SignatureError(f"{rel}: malformed signature (not base64 text)") from exc
        except SignatureError as exc:
            # Re-raise with the path relative to the pack, which is what reports show.
            raise SignatureError(str(exc).replace(str(pack_dir / rel), rel, 1)) from exc
    return files
