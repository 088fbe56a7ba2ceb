"""A small client of the OCI Distribution API (v1.1 endpoints, plain HTTP calls, no SDK).

Only what publishing, pulling and pruning model packs needs: blob HEAD / upload (monolithic, or
chunked with PATCH and ``Content-Range``) / streamed GET, manifest PUT / GET / HEAD / DELETE (by
digest), tag list, catalog.
``http.client`` rather than urllib: uploads stream from disk with an explicit
``Content-Length``, and redirects (registries that hand blob GETs to S3) are followed by hand,
dropping ``Authorization`` when the host changes (a presigned S3 URL refuses a second credential).

Credentials come from the environment only, never from a file: ``ADAS_OCI_USERNAME`` and
``ADAS_OCI_PASSWORD`` (HTTP Basic, e.g. ECR's ``AWS`` + ``aws ecr get-login-password``; also used
to fetch a bearer token when the registry answers 401 with a ``Bearer`` challenge, as Harbor and
Artifactory do), or ``ADAS_OCI_TOKEN`` (a bearer token obtained elsewhere).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol
from urllib.parse import quote, urlencode, urljoin, urlsplit

USERNAME_ENV = "ADAS_OCI_USERNAME"
PASSWORD_ENV = "ADAS_OCI_PASSWORD"
TOKEN_ENV = "ADAS_OCI_TOKEN"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def blob_digest(data: bytes) -> str:
    """``sha256:<hex>``: how OCI names a blob or a manifest by its bytes."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def canonical_json(data: object) -> bytes:
    """JSON with sorted keys and no spaces (UTF-8): the same document always has the same bytes,
    so the same digest."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# Distribution spec: repository names and tags.
REPOSITORY_RE = re.compile(r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
_IO_BLOCK = 1024 * 1024
_MAX_REDIRECTS = 5

Progress = Callable[[str, int, int], None]  # (blob digest, bytes sent so far, blob size)


class OciError(RuntimeError):
    """A registry call failed; the message names the registry URL."""


class OciRegistryUnreachableError(OciError):
    """Nothing answered at the registry's address (down, wrong port, DNS, TLS)."""


class OciHttpError(OciError):
    def __init__(self, message: str, status: int, codes: tuple[str, ...]) -> None:
        super().__init__(message)
        self.status = status
        self.codes = codes


@dataclass(frozen=True)
class Credentials:
    username: str | None = None
    password: str | None = None
    token: str | None = None

    def __repr__(self) -> str:  # never print a secret in a log or traceback
        return f"Credentials(username={self.username!r}, password=***, token={'***' if self.token else None})"


def credentials_from_env(env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials from ``ADAS_OCI_TOKEN`` or ``ADAS_OCI_USERNAME``/``ADAS_OCI_PASSWORD``; None
    for an anonymous registry (the local one). A username without a password is refused."""
    env = os.environ if env is None else env
    token = env.get(TOKEN_ENV) or None
    username, password = env.get(USERNAME_ENV) or None, env.get(PASSWORD_ENV) or None
    if (username is None) != (password is None):
        raise OciError(f"set both {USERNAME_ENV} and {PASSWORD_ENV} (or neither)")
    if token is None and username is None:
        return None
    return Credentials(username=username, password=password, token=token)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="https://x/token",service="reg",scope="repository:a/b:pull"`` ->
    ("bearer", {"realm": ..., "service": ..., "scope": ...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


@dataclass
class _Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class RegistryClient:
    """One OCI registry at ``url`` (``http://127.0.0.1:5000``, ``https://<id>.dkr.ecr...``)."""

    def __init__(self, url: str, credentials: Credentials | None = None, timeout_s: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OciError(f"{url!r}: not a registry URL (http://host:port or https://host)")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.host = parts.netloc  # how references name the registry: host[:port]/repository
        self.credentials = credentials
        self.timeout_s = timeout_s
        self._bearer: dict[str, str] = {}  # scope -> token fetched after a Bearer challenge

    @classmethod
    def from_env(cls, url: str, timeout_s: float = 60.0) -> RegistryClient:
        return cls(url, credentials_from_env(), timeout_s)

    # ------------------------------------------------------------------------------ transport

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        return cls(parts.netloc, timeout=self.timeout_s, blocksize=_IO_BLOCK)

    def _auth_header(self, scope: str | None) -> dict[str, str]:
        creds = self.credentials
        if scope is not None and scope in self._bearer:
            return {"Authorization": f"Bearer {self._bearer[scope]}"}
        if creds is None:
            return {}
        if creds.token:
            return {"Authorization": f"Bearer {creds.token}"}
        raw = f"{creds.username}:{creds.password}".encode()
        return {"Authorization": f"Basic {base64.b64encode(raw).decode()}"}

    def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | IO[bytes] | None,
        sink: _Sink | None,
    ) -> _Response:
        conn = self._connect(url)
        parts = urlsplit(url)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request(method, target, body=body, headers=dict(headers))
            resp = conn.getresponse()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
            if sink is not None and resp.status == 200 and method == "GET":
                while block := resp.read(_IO_BLOCK):
                    sink.write(block)
                data = b""
            else:
                data = resp.read()
            return _Response(resp.status, hdrs, data)
        except (OSError, http.client.HTTPException) as exc:
            raise OciRegistryUnreachableError(
                f"OCI registry {self.url} is unreachable: {method} {url} failed ({exc.__class__.__name__}: {exc})"
            ) from exc
        finally:
            conn.close()

    def _fetch_token(self, challenge: dict[str, str], scope: str) -> str:
        realm = challenge.get("realm")
        if not realm:
            raise OciError(f"OCI registry {self.url}: Bearer challenge without a realm")
        query = {k: v for k, v in (("service", challenge.get("service")), ("scope", scope)) if v}
        url = f"{realm}?{urlencode(query)}"
        creds = self.credentials
        headers = {}
        if creds is not None and creds.username is not None:
            raw = f"{creds.username}:{creds.password}".encode()
            headers["Authorization"] = f"Basic {base64.b64encode(raw).decode()}"
        resp = self._send("GET", url, headers, None, None)
        if resp.status != 200:
            raise OciHttpError(
                f"OCI registry {self.url}: token service {realm} answered {resp.status}", resp.status, ()
            )
        body = json.loads(resp.body)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise OciError(f"OCI registry {self.url}: token service {realm} returned no token")
        return str(token)

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes | Path | None = None,
        sink: _Sink | None = None,
        ok: tuple[int, ...] = (200,),
    ) -> _Response:
        """One call, with authentication (one retry after a Bearer challenge) and redirects for
        GET/HEAD. A status outside ``ok`` raises :class:`OciHttpError` naming the URL and the
        registry's error codes."""
        url = urljoin(self.url + "/", path_or_url)
        for attempt in range(2):
            hdrs = {**self._auth_header(scope), **(headers or {})}
            resp = self._follow(method, url, hdrs, body, sink)
            if resp.status == 401 and attempt == 0 and scope is not None:
                scheme, challenge = parse_challenge(resp.headers.get("www-authenticate", ""))
                if scheme == "bearer":
                    self._bearer[scope] = self._fetch_token(challenge, challenge.get("scope") or scope)
                    continue
            break
        if resp.status not in ok:
            codes = _error_codes(resp.body)
            detail = f": {', '.join(codes)}" if codes else ""
            raise OciHttpError(
                f"OCI registry {self.url}: {method} {url} answered {resp.status}{detail}", resp.status, codes
            )
        return resp

    def _follow(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes | Path | None,
        sink: _Sink | None,
    ) -> _Response:
        origin = urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            if isinstance(body, Path):
                with open(body, "rb") as fh:
                    resp = self._send(method, url, headers, fh, sink)
            else:
                resp = self._send(method, url, headers, body, sink)
            if method not in ("GET", "HEAD") or resp.status not in (301, 302, 303, 307, 308):
                return resp
            url = urljoin(url, resp.headers.get("location", ""))
            if urlsplit(url).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
        raise OciError(f"OCI registry {self.url}: more than {_MAX_REDIRECTS} redirects for {method} {url}")

    # ---------------------------------------------------------------------------------- blobs

    def blob_exists(self, repository: str, digest: str) -> bool:
        resp = self.request(
            "HEAD", f"/v2/{repository}/blobs/{digest}", scope=_scope(repository, "pull"), ok=(200, 404)
        )
        return resp.status == 200

    def upload_blob(
        self,
        repository: str,
        digest: str,
        source: bytes | Path,
        size: int,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: Progress | None = None,
    ) -> None:
        """POST an upload session, then one PUT ``?digest=`` with the bytes (up to ``chunk_size``)
        or PATCH chunks with ``Content-Range`` and a closing PUT. The registry checks the digest
        and only then makes the blob visible: an interrupted upload leaves no blob."""
        scope = _scope(repository, "pull,push")
        resp = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,))
        location = _location(resp, self.url)
        octet = {"Content-Type": "application/octet-stream"}
        if size <= chunk_size:
            self.request(
                "PUT",
                _with_digest(location, digest),
                scope=scope,
                headers={**octet, "Content-Length": str(size)},
                body=source,
                ok=(201,),
            )
            if progress is not None:
                progress(digest, size, size)
            return
        with _open_source(source) as fh:
            sent = 0
            while chunk := fh.read(chunk_size):
                end = sent + len(chunk) - 1
                resp = self.request(
                    "PATCH",
                    location,
                    scope=scope,
                    headers={**octet, "Content-Length": str(len(chunk)), "Content-Range": f"{sent}-{end}"},
                    body=chunk,
                    ok=(202,),
                )
                location = _location(resp, self.url)
                sent += len(chunk)
                if progress is not None:
                    progress(digest, sent, size)
        self.request(
            "PUT", _with_digest(location, digest), scope=scope, headers={"Content-Length": "0"}, ok=(201,)
        )

    def mount_blob(self, repository: str, digest: str, from_repository: str) -> bool:
        """Cross-repository mount of a blob this registry holds in ``from_repository``; False
        when the registry declines (it then opened an upload session, which is cancelled)."""
        scope = _scope(repository, "pull,push")
        resp = self.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?mount={digest}&from={from_repository}",
            scope=scope,
            ok=(201, 202),
        )
        if resp.status == 201:
            return True
        self.request("DELETE", _location(resp, self.url), scope=scope, ok=(204, 404))
        return False

    def get_blob(self, repository: str, digest: str, dest: Path) -> tuple[str, int]:
        """Stream a blob into ``dest``; returns the sha256 (``sha256:<hex>``) and size of what
        the registry sent (the caller compares them with what the manifest lists)."""
        hasher = _HashingWriter(dest)
        try:
            self.request(
                "GET", f"/v2/{repository}/blobs/{digest}", scope=_scope(repository, "pull"), sink=hasher
            )
        finally:
            hasher.close()
        return f"sha256:{hasher.sha.hexdigest()}", hasher.size

    # ------------------------------------------------------------------------------ manifests

    def put_manifest(
        self, repository: str, reference: str, data: bytes, media_type: str = OCI_MANIFEST
    ) -> str:
        """PUT a manifest under a tag (or digest); returns the digest the registry computed."""
        resp = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=_scope(repository, "pull,push"),
            headers={"Content-Type": media_type, "Content-Length": str(len(data))},
            body=data,
            ok=(201,),
        )
        return resp.headers.get("docker-content-digest", "")

    def get_manifest(self, repository: str, reference: str, accept: str = OCI_MANIFEST) -> bytes:
        resp = self.request(
            "GET",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=_scope(repository, "pull"),
            headers={"Accept": accept},
        )
        return resp.body

    def manifest_digest(self, repository: str, reference: str, accept: str = OCI_MANIFEST) -> str | None:
        """The digest a tag (or digest) resolves to now, None when the registry has none."""
        resp = self.request(
            "HEAD",
            f"/v2/{repository}/manifests/{quote(reference, safe=':')}",
            scope=_scope(repository, "pull"),
            headers={"Accept": accept},
            ok=(200, 404),
        )
        return resp.headers.get("docker-content-digest") if resp.status == 200 else None

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """DELETE a manifest by digest (the registry drops the tags pointing at it); False when
        it was already gone. The blobs stay until the registry's garbage collection."""
        if not DIGEST_RE.fullmatch(digest):
            raise OciError(f"{digest!r}: manifests are deleted by digest only")
        resp = self.request(
            "DELETE",
            f"/v2/{repository}/manifests/{digest}",
            scope=_scope(repository, "delete"),
            ok=(200, 202, 404),
        )
        return resp.status != 404

    def catalog(self, page: int = 1000) -> list[str]:
        """Every repository (``/v2/_catalog``, followed page by page through its ``Link``)."""
        names: list[str] = []
        path: str | None = f"/v2/_catalog?n={page}"
        while path:
            resp = self.request("GET", path, scope="registry:catalog:*")
            names.extend(json.loads(resp.body).get("repositories") or [])
            link = re.match(r"<([^>]+)>", resp.headers.get("link", ""))
            path = link.group(1) if link else None
        return names

    def tags(self, repository: str) -> list[str]:
        """Tags of a repository; an unknown repository has none."""
        resp = self.request(
            "GET", f"/v2/{repository}/tags/list", scope=_scope(repository, "pull"), ok=(200, 404)
        )
        if resp.status == 404:
            return []
        return list(json.loads(resp.body).get("tags") or [])


class _HashingWriter:
    """A file that hashes what is written to it."""

    def __init__(self, path: Path) -> None:
        self._fh = open(path, "wb")  # noqa: SIM115 - closed by close()
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def close(self) -> None:
        self._fh.close()


def _open_source(source: bytes | Path) -> IO[bytes]:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


def _location(resp: _Response, base: str) -> str:
    location = resp.headers.get("location")
    if not location:
        raise OciError(f"OCI registry {base}: upload answered {resp.status} without a Location")
    return urljoin(base + "/", location)


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={quote(digest, safe='')}"


def _error_codes(body: bytes) -> tuple[str, ...]:
    try:
        errors = json.loads(body).get("errors") or []
        return tuple(f"{e.get('code')} ({e.get('message')})" for e in errors if isinstance(e, dict))
    except (ValueError, AttributeError):
        return ()
