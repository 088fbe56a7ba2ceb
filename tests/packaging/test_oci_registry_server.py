"""The local OCI registry process: where it keeps its storage, what it ignores in the
environment, and how it fails when its port is taken."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from adas.packaging.local_oci_registry import LocalOciRegistry, LocalRegistryError, registry_available
from adas.packaging.oci_client import RegistryClient
from adas.settings import AdasHome

pytestmark = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)


def test_storage_under_adas_home_and_registry_overrides_ignored(
    adas_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Distribution reads REGISTRY_* variables as config overrides: these would move it to
    # another port and demand htpasswd logins if they reached the child.
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:1")
    monkeypatch.setenv("REGISTRY_AUTH", "htpasswd")
    home = AdasHome.from_env()
    reg = LocalOciRegistry(home.oci_registry)
    with reg:
        assert reg.running()
        client = RegistryClient(reg.url)
        digest = f"sha256:{hashlib.sha256(b'foo').hexdigest()}"
        client.upload_blob("adas/probe", digest, b"foo", 3)
        assert client.blob_exists("adas/probe", digest)
        blob = reg.blob_path(digest)
        assert blob.read_bytes() == b"foo"
        assert blob.is_relative_to(home.root / "oci-registry" / "storage")
    assert not reg.running()


def test_a_taken_port_fails_with_the_registry_log(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        reg = LocalOciRegistry(tmp_path / "reg", port=port, startup_timeout_s=10)
        with pytest.raises(
            LocalRegistryError, match=r"(?s)exited with code \d+ .*bind: address already in use"
        ):
            reg.start()
        assert not reg.running()
