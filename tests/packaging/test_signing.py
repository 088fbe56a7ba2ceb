"""Pack signatures and the trust root: keys made only by `keys init`, signed manifests, untrusted,
expired and revoked keys refused by id, rotation, and interop with the openssl CLI.

`cosign verify-blob --key <PEM> --signature f.sig f` checks an ECDSA-SHA256 signature (base64 of
DER) over the raw file with a PEM public key: exactly what
`openssl dgst -sha256 -verify <PEM> -signature sig.der f` checks. cosign itself is neither in
Debian bookworm nor on PyPI (sigstore-python only verifies keyless bundles), so openssl stands in.
"""

from __future__ import annotations

import base64
import json
import shutil
import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adas.config_errors import ConfigError
from adas.packaging.keys import init_local_keys, rotate_local_keys
from adas.packaging.signing import (
    MANIFEST_FILE,
    MANIFEST_SIGNATURE,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    SIGNING_KEY_ENV,
    SignatureError,
    SigningKey,
    check_pack,
    create_signing_key,
    load_key_file,
    load_signing_key,
    sign_blob,
    sign_pack,
    verify_blob,
    verify_pack,
)
from adas.packaging.trust import TRUST_FILE, TRUSTED_KEYS_ENV, TrustFile, load_trust_file, trust_file_path
from adas.settings import CONFIG_DIR, AdasHome

OPENSSL = shutil.which("openssl")
DATA_FILES = [
    "export_report.json",
    "model.onnx",
    "triton/detector/1/model.plan",
    "triton/detector/config.pbtxt",
]


@pytest.fixture(autouse=True)
def _no_production_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SIGNING_KEY_ENV, raising=False)


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    init_local_keys(tmp_path / "keys", tmp_path / "keys" / TRUST_FILE)
    return tmp_path / "keys"


@pytest.fixture
def key(keys: Path) -> SigningKey:
    return load_key_file(keys / PRIVATE_KEY_FILE)


def trust_of(keys: Path) -> TrustFile:
    return load_trust_file(keys / TRUST_FILE)


@pytest.fixture
def pack(tmp_path: Path) -> Path:
    pack = tmp_path / "pack"
    (pack / "triton" / "detector" / "1").mkdir(parents=True)
    (pack / "model.onnx").write_bytes(bytes(range(256)) * 64)
    (pack / "export_report.json").write_text('{"opset": 17}\n')
    (pack / "triton" / "detector" / "config.pbtxt").write_text('name: "detector"\n')
    (pack / "triton" / "detector" / "1" / "model.plan").write_bytes(b"\x00engine\x00")
    return pack


def _problems(pack: Path, keys: Path) -> list[str]:
    return check_pack(pack, trust_of(keys)).problems


# ----------------------------------------------------------------------------- keys


def test_keys_init_creates_and_enrols_once(tmp_path: Path) -> None:
    key_dir, trust_path = tmp_path / "keys", tmp_path / "keys" / TRUST_FILE
    first = init_local_keys(key_dir, trust_path)
    assert first.created and first.enrolled
    private = key_dir / PRIVATE_KEY_FILE
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    trusted = trust_of(key_dir).root.keys
    assert [k.key_id for k in trusted] == [first.key_id] == [load_key_file(private).key_id]
    assert trusted[0].not_after is None and not trusted[0].revoked
    assert "-----BEGIN PUBLIC KEY-----" in trust_path.read_text()
    again = init_local_keys(key_dir, trust_path)
    assert (again.key_id, again.created, again.enrolled) == (first.key_id, False, False)
    # Nothing published from the private key beside it, no temp files left.
    assert sorted(p.name for p in key_dir.iterdir()) == [PRIVATE_KEY_FILE, TRUST_FILE]


def test_signing_never_creates_a_key(tmp_path: Path) -> None:
    with pytest.raises(SignatureError, match=r"no signing key: run `adas-registry keys init`"):
        load_signing_key(tmp_path / "keys")
    assert not (tmp_path / "keys").exists()


def test_production_key_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: SigningKey, keys: Path
) -> None:
    monkeypatch.setenv(SIGNING_KEY_ENV, str(keys / PRIVATE_KEY_FILE))
    assert load_signing_key(tmp_path / "ignored").key_id == key.key_id
    assert not (tmp_path / "ignored").exists()
    # A missing production key is an error, never a reason to mint a new one.
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "secrets" / "missing.pem"))
    with pytest.raises(SignatureError, match=r"missing\.pem: file not found"):
        load_signing_key(tmp_path / "keys")


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
        load_signing_key()


def test_trust_file_errors_name_the_field(tmp_path: Path, keys: Path, key: SigningKey) -> None:
    body = yaml.safe_load((keys / TRUST_FILE).read_text())
    bad = tmp_path / "bad.yaml"

    def refused(edit: dict, match: str) -> None:
        entry = {**body["keys"][0], **edit}
        bad.write_text(yaml.safe_dump({"version": 1, "keys": [entry]}))
        with pytest.raises(ConfigError, match=match):
            load_trust_file(bad)

    refused({"key_id": "0" * 64}, r"keys\.0: key_id 0{64} is not the sha256 of public_key's DER")
    refused({"not_before": "2025-01-01T00:00:00"}, r"keys\.0\.not_before: .*timezone")
    refused({"not_after": "2000-01-01T00:00:00+00:00"}, r"keys\.0: not_after .* is before not_before")
    refused({"public_key": "not a key"}, r"keys\.0\.public_key: not a PEM public key")
    bad.write_text(yaml.safe_dump({"version": 1, "keys": body["keys"] * 2}))
    with pytest.raises(ConfigError, match=rf"key ids listed more than once: {key.key_id}"):
        load_trust_file(bad)
    with pytest.raises(ConfigError, match=r"missing\.yaml: no trust file: run `adas-registry keys init`"):
        load_trust_file(tmp_path / "missing.yaml")


def test_where_the_trust_file_lives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pack: Path, key: SigningKey
) -> None:
    from adas.registry.settings import RegistrySettings

    monkeypatch.delenv(TRUSTED_KEYS_ENV, raising=False)
    monkeypatch.setenv("ADAS_HOME", str(tmp_path / "home"))
    local = AdasHome.from_env().keys / TRUST_FILE
    assert trust_file_path(env="local") == local
    assert RegistrySettings.from_env("local").trusted_keys == str(local)
    # Production: the reviewed file in this repository; it lists no key yet, so nothing passes.
    shipped = CONFIG_DIR / TRUST_FILE
    assert trust_file_path(env="production") == shipped
    monkeypatch.setenv("ADAS_REGISTRY_URL", "postgresql://db/registry")
    assert RegistrySettings.from_env("production").trusted_keys == str(shipped)
    sign_pack(pack, key)
    assert _problems(pack, shipped.parent) == [
        f"{MANIFEST_FILE}: signed by key {key.key_id}, which is not in {shipped}"
    ]
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(tmp_path / "mounted.yaml"))
    assert trust_file_path(env="production") == trust_file_path(env="local") == tmp_path / "mounted.yaml"


# ----------------------------------------------------------------------------- signed packs


def test_sign_and_verify_round_trip(pack: Path, key: SigningKey, keys: Path) -> None:
    signed_at = datetime.now(UTC)
    manifest = sign_pack(pack, key, {"model": {"version": "1.0.0"}}, signed_at=signed_at)
    listed = sorted([*DATA_FILES, *(f"{rel}.sig" for rel in DATA_FILES), PUBLIC_KEY_FILE])
    assert sorted(manifest["files"]) == listed
    assert manifest["signing"] == {
        "key_id": key.key_id,
        "signed_at": signed_at.isoformat(),
        "algorithm": "ECDSA-P256-SHA256",
    }
    assert manifest["model"] == {"version": "1.0.0"} and manifest["schema_version"] == 2
    assert json.loads((pack / MANIFEST_FILE).read_text()) == manifest
    for rel in DATA_FILES:
        on_disk = (pack / f"{rel}.sig").read_text()
        assert not on_disk.endswith("\n")  # byte-identical to cosign's output
        assert len(base64.b64decode(on_disk, validate=True)) in range(68, 73)  # DER ECDSA P-256
    assert (pack / PUBLIC_KEY_FILE).read_bytes() == key.public_key_pem()
    result = check_pack(pack, trust_of(keys))
    assert result.ok and result.key_id == key.key_id and result.signed_at == signed_at
    assert result.files == listed and result.signed == DATA_FILES
    assert verify_pack(pack, trust_of(keys)) == listed
    # Deterministic (RFC 6979): re-signing the same bytes at the same time changes no byte.
    before = {p: p.read_bytes() for p in pack.rglob("*") if p.is_file()}
    sign_pack(pack, key, {"model": {"version": "1.0.0"}}, signed_at=signed_at)
    assert {p: p.read_bytes() for p in pack.rglob("*") if p.is_file()} == before
    assert verify_blob(key.public_key_pem(), pack / "model.onnx", sign_blob(key, pack / "model.onnx")) is None


def test_tampered_file_is_named(pack: Path, key: SigningKey, keys: Path) -> None:
    sign_pack(pack, key)
    plan = pack / "triton" / "detector" / "1" / "model.plan"
    plan.write_bytes(plan.read_bytes() + b"!")
    problems = _problems(pack, keys)
    assert problems[0].startswith("triton/detector/1/model.plan: sha256 ")
    assert "differs from the signed manifest's" in problems[0]
    assert problems[1].startswith("triton/detector/1/model.plan: signature does not match")
    with pytest.raises(SignatureError, match=r"^triton/detector/1/model\.plan: sha256"):
        verify_pack(pack, trust_of(keys))


def test_missing_added_and_malformed_files_are_named(pack: Path, key: SigningKey, keys: Path) -> None:
    sign_pack(pack, key)
    (pack / "export_report.json.sig").unlink()
    (pack / "extra.bin").write_bytes(b"smuggled")
    (pack / "model.onnx.sig").write_text("definitely not base64 !!")
    (pack / "triton" / "detector" / "config.pbtxt").unlink()
    problems = _problems(pack, keys)
    assert "export_report.json.sig: listed in the signed manifest but missing from the pack" in problems
    assert "triton/detector/config.pbtxt: listed in the signed manifest but missing from the pack" in problems
    assert "extra.bin: not in the signed manifest (added after signing)" in problems
    assert "export_report.json: signature file export_report.json.sig is missing" in problems
    assert any(p.startswith("model.onnx: malformed signature") for p in problems)
    assert any(p.startswith("model.onnx.sig: sha256") for p in problems)


def test_unsigned_or_modified_manifest_is_refused(pack: Path, key: SigningKey, keys: Path) -> None:
    sign_pack(pack, key)
    body = json.loads((pack / MANIFEST_FILE).read_text())
    body["files"]["model.onnx"] = "0" * 64
    (pack / MANIFEST_FILE).write_text(json.dumps(body))
    assert _problems(pack, keys) == [
        f"{MANIFEST_FILE}: signature does not match trusted key {key.key_id} (manifest modified after signing?)"
    ]
    (pack / MANIFEST_SIGNATURE).unlink()
    assert _problems(pack, keys) == [
        f"{MANIFEST_FILE} is not signed ({MANIFEST_SIGNATURE} missing): nothing vouches for the pack"
    ]


def test_pack_signed_by_a_fresh_key_is_refused_naming_it(pack: Path, keys: Path, tmp_path: Path) -> None:
    """A self-consistent pack (its own cosign.pub, every signature valid for it) by a key that
    the trust root does not list: refused, and the refusal names the key."""
    fresh = create_signing_key(tmp_path / "attacker" / PRIVATE_KEY_FILE)
    sign_pack(pack, fresh)
    for rel in DATA_FILES:  # every signature is valid for the key the pack ships
        verify_blob((pack / PUBLIC_KEY_FILE).read_bytes(), pack / rel, (pack / f"{rel}.sig").read_text())
    assert _problems(pack, keys) == [
        f"{MANIFEST_FILE}: signed by key {fresh.key_id}, which is not in {keys / TRUST_FILE}"
    ]


def test_tampered_inference_config_resigned_by_an_untrusted_key(
    pack: Path, key: SigningKey, keys: Path, tmp_path: Path
) -> None:
    (pack / "inference_config.json").write_text('{"score_threshold": 0.3}\n')
    sign_pack(pack, key)
    attacker = create_signing_key(tmp_path / "attacker" / PRIVATE_KEY_FILE)
    config = pack / "inference_config.json"
    config.write_text('{"score_threshold": 0.01}\n')
    (pack / "inference_config.json.sig").write_text(sign_blob(attacker, config))
    (pack / PUBLIC_KEY_FILE).write_bytes(attacker.public_key_pem())
    # The manifest left alone: the file, its signature and the shipped key all differ from it.
    problems = _problems(pack, keys)
    for rel in ("cosign.pub", "inference_config.json", "inference_config.json.sig"):
        assert any(p.startswith(f"{rel}: sha256 ") for p in problems), (rel, problems)
    assert "inference_config.json: signature does not match the file (modified after signing?)" in problems
    # The manifest re-made and re-signed by the attacker: refused by key id.
    sign_pack(pack, attacker)
    assert _problems(pack, keys) == [
        f"{MANIFEST_FILE}: signed by key {attacker.key_id}, which is not in {keys / TRUST_FILE}"
    ]


def test_expired_and_revoked_keys_are_refused(pack: Path, key: SigningKey, keys: Path) -> None:
    now = datetime.now(UTC)
    sign_pack(pack, key, signed_at=now)
    body = yaml.safe_load((keys / TRUST_FILE).read_text())
    # The window closed before the pack was signed: expired for it.
    body["keys"][0]["not_before"] = (now - timedelta(hours=1)).isoformat()
    body["keys"][0]["not_after"] = (now - timedelta(seconds=1)).isoformat()
    (keys / TRUST_FILE).write_text(yaml.safe_dump(body))
    [problem] = _problems(pack, keys)
    assert problem.startswith(
        f"{MANIFEST_FILE}: signed by key {key.key_id} at {now.isoformat()}, outside its"
    )
    # Revoked: refused whatever the signing time.
    body["keys"][0]["not_after"] = None
    body["keys"][0]["revoked"] = True
    (keys / TRUST_FILE).write_text(yaml.safe_dump(body))
    assert _problems(pack, keys) == [
        f"{MANIFEST_FILE}: signed by key {key.key_id}, which is revoked in {keys / TRUST_FILE}"
    ]


def test_rotation_keeps_old_packs_valid_and_retires_the_old_key(
    tmp_path: Path, pack: Path, key: SigningKey, keys: Path
) -> None:
    old_pack = tmp_path / "old-pack"
    shutil.copytree(pack, old_pack)
    sign_pack(old_pack, key)
    retired_copy = tmp_path / "old-key.pem"  # what a leaked copy of the old key would be
    shutil.copyfile(keys / PRIVATE_KEY_FILE, retired_copy)
    change = rotate_local_keys(keys, keys / TRUST_FILE)
    assert change.retired_key_id == key.key_id and change.key_id != key.key_id
    new_key = load_key_file(keys / PRIVATE_KEY_FILE)
    assert new_key.key_id == change.key_id  # the old private key is gone from the key directory
    assert sorted(p.name for p in keys.iterdir()) == [PRIVATE_KEY_FILE, TRUST_FILE]
    trusted = {k.key_id: k for k in trust_of(keys).root.keys}
    assert trusted[key.key_id].not_after == trusted[new_key.key_id].not_before
    assert trusted[new_key.key_id].not_after is None
    # Old packs still verify; new packs carry the new key id and verify.
    assert check_pack(old_pack, trust_of(keys)).ok
    assert sign_pack(pack, new_key)["signing"]["key_id"] == new_key.key_id
    assert check_pack(pack, trust_of(keys)).ok
    # The old key can no longer sign a pack that verifies.
    sign_pack(pack, load_key_file(retired_copy))
    [problem] = _problems(pack, keys)
    assert f"signed by key {key.key_id} at " in problem and "outside its validity window" in problem
    # init after a rotation keeps the new key.
    assert init_local_keys(keys, keys / TRUST_FILE).key_id == new_key.key_id


def test_refuses_to_sign_a_private_key_or_nothing(
    pack: Path, key: SigningKey, keys: Path, tmp_path: Path
) -> None:
    shutil.copy(keys / PRIVATE_KEY_FILE, pack / "oops.pem")
    with pytest.raises(
        SignatureError, match=r"oops\.pem: refusing to sign a pack that contains a private key"
    ):
        sign_pack(pack, key)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SignatureError, match="no files"):
        sign_pack(empty, key)


# ----------------------------------------------------------------------------- interop


def _openssl_verify(pub: Path, sig_b64: str, blob: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    der = tmp_path / "sig.der"
    der.write_bytes(base64.b64decode(sig_b64))
    return subprocess.run(
        [OPENSSL or "openssl", "dgst", "-sha256", "-verify", str(pub), "-signature", str(der), str(blob)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_openssl_verifies_our_signatures(pack: Path, key: SigningKey, keys: Path, tmp_path: Path) -> None:
    """The cosign verify-blob check, done by an independent implementation with the trusted PEM."""
    pem = tmp_path / "trusted.pem"
    pem.write_text(trust_of(keys).root.keys[0].public_key)
    sign_pack(pack, key)
    for rel in [*DATA_FILES, MANIFEST_FILE]:
        proc = _openssl_verify(pem, (pack / f"{rel}.sig").read_text(), pack / rel, tmp_path)
        assert proc.returncode == 0 and "Verified OK" in proc.stdout, (rel, proc.stdout, proc.stderr)
    model = pack / "model.onnx"
    model.write_bytes(b"tampered" + model.read_bytes())
    proc = _openssl_verify(pem, (pack / "model.onnx.sig").read_text(), model, tmp_path)
    assert proc.returncode == 1 and "Verification failure" in proc.stdout


@pytest.mark.skipif(OPENSSL is None, reason="openssl CLI not installed")
def test_we_verify_openssl_signatures(pack: Path, key: SigningKey, keys: Path, tmp_path: Path) -> None:
    """The other direction: a signature made outside our code (as cosign sign-blob would)."""
    blob = pack / "model.onnx"
    der = tmp_path / "openssl.der"
    subprocess.run(
        [OPENSSL or "openssl", "dgst", "-sha256", "-sign", str(keys / PRIVATE_KEY_FILE),
         "-out", str(der), str(blob)],
        check=True, capture_output=True,
    )  # fmt: skip
    verify_blob(key.public_key_pem(), blob, base64.b64encode(der.read_bytes()).decode())
    with pytest.raises(SignatureError, match="does not match"):
        verify_blob(
            key.public_key_pem(), pack / "export_report.json", base64.b64encode(der.read_bytes()).decode()
        )
