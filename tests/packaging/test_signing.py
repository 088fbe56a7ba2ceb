"""Pack signatures: keys, sign/verify round trip, tampering, and interop with the openssl CLI.

`cosign verify-blob --key cosign.pub --signature f.sig f` checks an ECDSA-SHA256 signature
(base64 of DER) over the raw file with a PEM public key: exactly what
`openssl dgst -sha256 -verify cosign.pub -signature sig.der f` checks. cosign itself is
neither in Debian bookworm nor on PyPI (sigstore-python only verifies keyless bundles), so
openssl stands in for it.
"""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adas.packaging.signing import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SIGNING_KEY_ENV,
    SignatureError,
    SigningKey,
    load_or_create_signing_key,
    sign_blob,
    sign_pack,
    verify_blob,
    verify_pack,
)

OPENSSL = shutil.which("openssl")


@pytest.fixture(autouse=True)
def _no_production_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


@pytest.fixture
def key(tmp_path: Path) -> SigningKey:
    return load_or_create_signing_key(tmp_path / "keys")


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    pack = tmp_path / "pack"
    (pack / "triton" / "detector" / "1").mkdir(parents=True)
    (pack / "model.onnx").write_bytes(bytes(range(256)) * 64)
    (pack / "export_report.json").write_text('{"opset": 17}\n')
    (pack / "triton" / "detector" / "config.pbtxt").write_text('name: "detector"\n')
    (pack / "triton" / "detector" / "1" / "model.plan").write_bytes(b"\x00engine\x00")
    return pack


def test_key_is_created_once_with_private_permissions(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key = load_or_create_signing_key(key_dir)
    private = key_dir / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert (key_dir / PUBLIC_KEY_FILE).read_bytes() == key.public_key_pem()
    assert key.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")
    again = load_or_create_signing_key(key_dir)
    assert again.key_id == key.key_id and len(key.key_id) == 64
    assert [p.name for p in key_dir.iterdir() if p.name.startswith(".")] == []  # no temp files left


def test_production_key_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = load_or_create_signing_key(tmp_path / "local")
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "local" / PRIVATE_KEY_FILE))
    assert load_or_create_signing_key(tmp_path / "ignored").key_id == local.key_id
    assert not (tmp_path / "ignored").exists()
    # A missing production key is an error, never a reason to mint a new one.
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "secrets" / "missing.pem"))
    with pytest.raises(SignatureError, match=r"missing\.pem: file not found"):
        load_or_create_signing_key(tmp_path / "keys")


def test_only_p256_keys_are_accepted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = ec.generate_private_key(ec.SECP384R1())
    path = tmp_path / "p384.pem"
    path.write_bytes(
        other.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    monkeypatch.setenv(SIGNING_KEY_ENV, str(path))
    with pytest.raises(SignatureError, match="P-256"):
        load_or_create_signing_key()


def test_sign_and_verify_round_trip(pack: Path, key: SigningKey) -> None:
    signatures = sign_pack(pack, key)
    expected = [
        "export_report.json",
        "model.onnx",
        "triton/detector/1/model.plan",
        "triton/detector/config.pbtxt",
    ]
    assert sorted(signatures) == expected
    for rel, sig in signatures.items():
        on_disk = (pack / f"{rel}.sig").read_text()
        assert on_disk == sig and not on_disk.endswith("\n")  # byte-identical to cosign's output
        assert len(base64.b64decode(sig, validate=True)) in range(68, 73)  # DER ECDSA P-256
    assert (pack / PUBLIC_KEY_FILE).read_bytes() == key.public_key_pem()
    assert verify_pack(pack) == expected
    assert verify_pack(pack, key.public_key_pem().decode()) == expected
    # Signing is idempotent: a second pass still verifies and adds no signatures of signatures.
    sign_pack(pack, key)
    assert verify_pack(pack) == expected
    assert verify_blob(key.public_key_pem(), pack / "model.onnx", sign_blob(key, pack / "model.onnx")) is None


def test_tampered_file_is_named(pack: Path, key: SigningKey) -> None:
    sign_pack(pack, key)
    plan = pack / "triton" / "detector" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"!")
    with pytest.raises(SignatureError, match=r"^triton/detector/1/model\.plan: signature does not match"):
        verify_pack(pack)


def test_missing_signature_is_named(pack: Path, key: SigningKey) -> None:
    sign_pack(pack, key)
    (pack / "export_report.json.sig").unlink()
    with pytest.raises(
        SignatureError, match=r"^export_report\.json: signature file export_report\.json\.sig is missing"
    ):
        verify_pack(pack)


def test_added_file_without_signature_is_named(pack: Path, key: SigningKey) -> None:
    sign_pack(pack, key)
    (pack / "extra.bin").write_bytes(b"smuggled")
    with pytest.raises(SignatureError, match=r"^extra\.bin: signature file"):
        verify_pack(pack)


def test_malformed_signature_is_named(pack: Path, key: SigningKey) -> None:
    sign_pack(pack, key)
    (pack / "model.onnx.sig").write_text("definitely not base64 !!")
    with pytest.raises(SignatureError, match=r"^model\.onnx: malformed signature"):
        verify_pack(pack)
    (pack / "model.onnx.sig").write_text(base64.b64encode(b"valid base64, not DER").decode())
    with pytest.raises(SignatureError, match=r"^model\.onnx: malformed signature"):
        verify_pack(pack)


def test_removed_file_is_named_and_resigning_cleans_up(pack: Path, key: SigningKey) -> None:
    sign_pack(pack, key)
    (pack / "model.onnx").unlink()
    with pytest.raises(SignatureError, match=r"^model\.onnx: signed file is missing"):
        verify_pack(pack)
    sign_pack(pack, key)
    assert not (pack / "model.onnx.sig").exists()
    assert "model.onnx" not in verify_pack(pack)


def test_pinned_key_catches_a_resigned_pack(pack: Path, key: SigningKey, tmp_path: Path) -> None:
    """Whoever rewrites a pack can rewrite its cosign.pub: callers pin the expected key."""
    sign_pack(pack, load_or_create_signing_key(tmp_path / "attacker"))
    verify_pack(pack)  # self-consistent
    with pytest.raises(SignatureError, match="signature does not match"):
        verify_pack(pack, key.public_key_pem())


def test_refuses_to_sign_a_private_key(pack: Path, key: SigningKey, tmp_path: Path) -> None:
    shutil.copy(tmp_path / "keys" / PRIVATE_KEY_FILE, pack / "oops.pem")
    with pytest.raises(
        SignatureError, match=r"oops\.pem: refusing to sign a pack that contains a private key"
    ):
        sign_pack(pack, key)


def test_empty_or_unsigned_packs(tmp_path: Path, key: SigningKey) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SignatureError, match="no files"):
        sign_pack(empty, key)
    (empty / "a.txt").write_text("a")
    with pytest.raises(SignatureError, match=r"cosign\.pub: public key missing"):
        verify_pack(empty)


def _openssl_verify(pub: Path, sig_b64: str, blob: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(sig_b64))
    return subprocess.run(
        [OPENSSL or "openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(der), str(blob)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_verifies_our_signatures(pack: Path, key: SigningKey, tmp_path: Path) -> None:
    """The cosign verify-blob check, done by an independent implementation."""
    signatures = sign_pack(pack, key)
    for rel, sig in signatures.items():
        proc = _openssl_verify(
            pack / PUBLIC_KEY_FILE, (pack / f"{rel}.sig").read_text(), pack / rel, tmp_path
        )
        assert proc.returncode == 0 and "Verified OK" in proc.stdout, (rel, proc.stdout, proc.stderr)
        assert sig
    model = pack / "model.onnx"
    model.write_bytes(b"tampered" + model.read_bytes())
    proc = _openssl_verify(pack / PUBLIC_KEY_FILE, signatures["model.onnx"], model, tmp_path)
    assert proc.returncode == 1 and "Verification failure" in proc.stdout


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_we_verify_openssl_signatures(pack: Path, key: SigningKey, tmp_path: Path) -> None:
    """The other direction: a signature made outside our code (as cosign sign-blob would)."""
    blob = pack / "model.onnx"
    der = tmp_path / "openssl.der"
    subprocess.run(
        [OPENSSL or "openssl", "dgst", "-sha256", "-sign", str(tmp_path / "keys" / PRIVATE_KEY_FILE),
         "-out", str(der), str(blob)],
        check=True, capture_output=True,
    )  # fmt: skip
    verify_blob(key.public_key_pem(), blob, base64.b64encode(der.read_bytes()).decode())
    with pytest.raises(SignatureError, match="does not match"):
        verify_blob(
            key.public_key_pem(), pack / "export_report.json", base64.b64encode(der.read_bytes()).decode()
        )
