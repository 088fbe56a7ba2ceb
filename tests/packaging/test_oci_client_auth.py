"""Registry authentication as Harbor, Artifactory or Docker Hub do it, against a stub server
(Distribution needs an external token service for this): a 401 ``Bearer`` challenge, a token
fetched with the Basic credentials from the environment, and blob redirects to another host
that never see the registry's credential."""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from adas.packaging.oci_client import PASSWORD_ENV, USERNAME_ENV, OciHttpError, RegistryClient

BLOB = b"layer bytes"
DIGEST = f"sha256:{hashlib.sha256(BLOB).hexdigest()}"
TOKEN = "registry-token-1"


class _Stub(BaseHTTPRequestHandler):
    seen: list[tuple[str, str, str | None]]  # (host header, path, Authorization) of every request
    port: int

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization")
        self.seen.append((self.headers.get("Host", ""), self.path, auth))
        url = urlsplit(self.path)
        if url.path == "/token":
            basic = "Basic " + base64.b64encode(b"robot:s3cret").decode()
            query = parse_qs(url.query)
            if auth == basic and query.get("scope") == ["repository:adas/m:pull"]:
                self._reply(200, f'{{"token": "{TOKEN}"}}'.encode())
            else:
                self._reply(401)
        elif url.path == "/storage/blob":
            self._reply(200, BLOB)  # "S3": reached through a redirect, by another host name
        elif auth != f"Bearer {TOKEN}":
            challenge = f'Bearer realm="http://127.0.0.1:{self.port}/token",service="stub",scope="repository:adas/m:pull"'
            self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}', {"WWW-Authenticate": challenge})
        elif url.path == f"/v2/adas/m/blobs/{DIGEST}":
            self._reply(307, headers={"Location": f"http://localhost:{self.port}/storage/blob"})
        else:
            self._reply(404)


@pytest.fixture
def stub() -> Iterator[tuple[str, list[tuple[str, str, str | None]]]]:
    seen: list[tuple[str, str, str | None]] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    _Stub.seen, _Stub.port = seen, server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_from_env_credentials_and_no_credential_on_redirect(
    stub: tuple[str, list[tuple[str, str, str | None]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, seen = stub
    monkeypatch.setenv(USERNAME_ENV, "robot")
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    client = RegistryClient.from_env(url, timeout_s=5)
    assert client.blob_exists("adas/m", DIGEST)
    digest, size = client.get_blob("adas/m", DIGEST, tmp_path / "blob")
    assert (digest, size) == (DIGEST, len(BLOB))
    assert (tmp_path / "blob").read_bytes() == BLOB
    # One challenge, one token, then the token on every registry call; nothing sent to "S3".
    assert [p for _, p, _ in seen].count("/token?service=stub&scope=repository%3Aadas%2Fm%3Apull") == 1
    assert [a for h, p, a in seen if p.startswith("/v2/")][1:] == [f"Bearer {TOKEN}"] * 2
    assert [a for h, p, a in seen if p == "/storage/blob"] == [None, None]  # HEAD and GET, redirected


def test_wrong_credentials_fail_naming_the_token_service(
    stub: tuple[str, list[tuple[str, str, str | None]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = stub
    monkeypatch.setenv(USERNAME_ENV, "robot")
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    with pytest.raises(OciHttpError, match=f"OCI registry {url}: token service {url}/token answered 401"):
        RegistryClient.from_env(url, timeout_s=5).blob_exists("adas/m", DIGEST)
