"""The artifact store: local files by default, S3 in production, one protocol.

This is the only storage protocol in the platform: domain code takes an :class:`ArtifactStore`
and never branches on the concrete class. The Dagster resources in ``resources/artifact_store.py``
only build one of these.

Kept as one module of about 500 lines: the protocol, its two implementations and the settings
that pick one are one contract (atomic writes, hash records, verified reads, conditional
create) that the same parametrized tests hold both stores to; splitting them would let the
implementations drift apart.

Every write is atomic (temporary name then rename locally; a single PUT on S3) and records
the content's sha256 next to it (a ``sha256sum``-compatible ``<name>.sha256`` sidecar
locally, object metadata on S3). Every read re-hashes and compares, so a truncated or
tampered artifact raises :class:`ArtifactIntegrityError` naming the file and both hashes.

That record sits beside the bytes, so whoever can rewrite one can rewrite the other: it catches
accidents, not tampering. Readers downstream therefore pass ``expected_sha256=``, the hash
recorded when the artifact was written (in the upstream materialization, the descriptor it
handed on, or the registry entry); a read whose bytes differ from that pin raises
:class:`PinnedHashMismatchError`, naming the run that recorded the pin when the caller noted it
(:func:`note_pin_origin`).
"""

import base64
import errno
import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

from botocore.config import Config as BotocoreConfig
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

from adas.config_errors import load_yaml_model
from adas.settings import CONFIG_DIR, AdasHome

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """Base class for artifact store failures."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    pass


class ArtifactIntegrityError(ArtifactError):
    """Stored bytes do not hash to the recorded sha256 (truncated, tampered or half-written)."""


class ArtifactWriteError(OSError, ArtifactError):
    """A write failed (a full disk, S3 errors past every retry); it names the key, and nothing
    new is stored under it. An ``OSError`` too, with the cause's errno (``ENOSPC``...)."""


class PinnedHashMismatchError(ArtifactIntegrityError):
    """Stored bytes do not hash to the sha256 the reader pinned: the hash an upstream
    materialization or a registry entry recorded when the artifact was written. The store's own
    record (sidecar, object metadata) does not count: whoever can rewrite the bytes can rewrite it."""

    def __init__(self, uri: str, pinned: str, actual: str, size: int, pinned_by: str | None) -> None:
        self.uri, self.pinned, self.actual, self.pinned_by = uri, pinned, actual, pinned_by
        by = f" (pinned by {pinned_by})" if pinned_by else ""
        super().__init__(
            f"{uri}: sha256 mismatch: expected {pinned}{by}, read {actual} ({size} bytes); "
            "the artifact changed after its hash was recorded upstream"
        )


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    uri: str
    sha256: str
    size: int

    def as_metadata(self) -> dict[str, str | int]:
        return {"key": self.key, "uri": self.uri, "sha256": self.sha256, "size": self.size}


def sha256_stream(src: IO[bytes], copy_to: IO[bytes] | None = None) -> tuple[str, int]:
    """The sha256 (hex) and size of everything read from ``src``, copied to ``copy_to`` if given."""
    digest, size = hashlib.sha256(), 0
    while chunk := src.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return digest.hexdigest(), size


def sha256_file(path: Path) -> tuple[str, int]:
    with open(path, "rb") as f:
        return sha256_stream(f)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_key(key: str) -> str:
    """Keys are relative POSIX paths without '..', so they map onto both a folder and a bucket."""
    p = PurePosixPath(key)
    if (
        not key
        or key.startswith("/")
        or p.is_absolute()
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise ValueError(
            f"invalid artifact key {key!r}: use a relative path like 'models/task/1.0.0/model.onnx'"
        )
    if key.endswith(SIDECAR_SUFFIX):
        raise ValueError(
            f"invalid artifact key {key!r}: the {SIDECAR_SUFFIX} suffix is reserved for hash records"
        )
    return key


def _integrity_error(uri: str, expected: str, actual: str, size: int, what: str) -> ArtifactIntegrityError:
    return ArtifactIntegrityError(
        f"{uri}: sha256 mismatch: {what} {expected}, read {actual} ({size} bytes); "
        "the artifact was truncated or modified after it was written"
    )


# Who recorded each pin (store key, sha256) a reader in this process was handed, so that a
# mismatch names the run that wrote the artifact. Filled by the layer that knows (the Dagster IO
# manager, from the upstream materialization); only ever used to word an error.
_PIN_ORIGINS: dict[tuple[str, str], str] = {}


def note_pin_origin(key: str, sha256: str, origin: str) -> None:
    """Remember that the pin ``sha256`` of ``key`` came from ``origin`` (e.g. "the materialization
    of engine [x86-cpu|fp32] in run 1a2b...") for the error of a later mismatching read."""
    _PIN_ORIGINS[(key, sha256)] = origin


def pin_origin(key: str, sha256: str) -> str | None:
    return _PIN_ORIGINS.get((key, sha256))


def pinned_mismatch(key: str, uri: str, pinned: str, actual: str, size: int) -> PinnedHashMismatchError:
    return PinnedHashMismatchError(uri, pinned, actual, size, pin_origin(key, pinned))


def _verify(key: str, uri: str, actual: str, size: int, recorded: str, expected: str | None) -> None:
    """Bytes read must hash to the caller's pin if any (checked first: it is the hash that counts,
    whatever the store's record says), and to the hash the store recorded at write time."""
    if expected is not None and actual != expected:
        raise pinned_mismatch(key, uri, expected, actual, size)
    if actual != recorded:
        raise _integrity_error(uri, recorded, actual, size, "recorded")


def _tmp_name(dest: Path) -> Path:
    """The temporary name a write to ``dest`` goes through (never listed as an artifact)."""
    return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")


def _write_new_file(path: Path, chunks: Iterable[bytes]) -> tuple[str, int]:
    """Create ``path`` (a fresh temporary name) holding ``chunks``, fsynced; its sha256 and size.
    Every chunk is written in full (``os.write`` may write less than asked)."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        for chunk in chunks:
            digest.update(chunk)
            size += len(chunk)
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return digest.hexdigest(), size


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (a rename lives in the directory, not the file)."""
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _holds(dest: Path, sidecar: Path, digest: str) -> bool:
    """True if ``dest`` already holds bytes hashing to ``digest``, recorded as such."""
    try:
        return sidecar.read_text().split()[:1] == [digest] and sha256_file(dest)[0] == digest
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return False


def atomic_write_bytes(dest: Path, data: bytes) -> None:
    """Write ``dest`` so that readers see the old content or the new, never a part (tmp + fsync + rename)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(dest)
    try:
        _write_new_file(tmp, [data])
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


class ArtifactStore(ABC):
    """The protocol shared by the local and S3 stores: put / get / open / exists / list / delete,
    with the sha256 recorded on write and verified on every read."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def put_file(self, key: str, src: Path) -> StoredArtifact: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> StoredArtifact: ...

    @abstractmethod
    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if nothing is stored there yet, atomically against other writers
        (processes or machines); True if this call created it."""

    @abstractmethod
    def recorded_sha256(self, key: str) -> str: ...

    @abstractmethod
    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes: ...

    @abstractmethod
    def fetch(self, key: str, expected_sha256: str | None = None) -> Path:
        """A local path holding the verified content (the file itself locally, a cache copy for S3)."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one artifact and its hash record (missing is not an error)."""

    @contextmanager
    def open(self, key: str, expected_sha256: str | None = None) -> Iterator[IO[bytes]]:
        """A binary stream of the verified content."""
        with open(self.fetch(key, expected_sha256), "rb") as f:
            yield f

    def put_tree(self, prefix: str, src_dir: Path) -> list[StoredArtifact]:
        """Store every file under ``src_dir`` below ``prefix``, in sorted order."""
        src_dir = Path(src_dir)
        stored = []
        for path in sorted(p for p in src_dir.rglob("*") if p.is_file()):
            rel = path.relative_to(src_dir).as_posix()
            stored.append(self.put_file(f"{prefix.rstrip('/')}/{rel}", path))
        return stored

    def fetch_tree(self, prefix: str, dest: Path | None = None) -> Path:
        """Verify every file under ``prefix``; return a local directory holding them."""
        keys = self.list_keys(prefix)
        if not keys:
            raise ArtifactNotFoundError(f"{self.uri(prefix)}: no artifacts under this prefix")
        local = [self.fetch(k) for k in keys]
        if dest is None:
            # Both stores lay fetched files out as <root>/<key>, so the prefix folder is shared.
            return Path(str(local[0])[: -len(keys[0])]) / prefix.rstrip("/")
        for key, path in zip(keys, local, strict=True):
            target = Path(dest) / Path(key).relative_to(prefix.rstrip("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return Path(dest)

    def verify(self, key: str) -> str:
        """Re-hash one artifact against its record; return the hash."""
        self.fetch(key)
        return self.recorded_sha256(key)


class LocalArtifactStore(ArtifactStore):
    """Artifacts under a local folder (default ``$ADAS_HOME/artifacts``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = str(root)

    def __repr__(self) -> str:
        return f"LocalArtifactStore(root={self.root!r})"

    @property
    def _root(self) -> Path:
        return Path(self.root)

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri() if key else self._root.resolve().as_uri()

    def _write_failed(self, key: str, exc: OSError) -> ArtifactWriteError:
        return ArtifactWriteError(
            exc.errno if exc.errno is not None else errno.EIO,
            f"{self.uri(key)}: could not store {key!r}: {exc.strerror or exc}; nothing new is "
            "stored under this key (an earlier version, if any, is intact)",
        )

    def _store(self, key: str, chunks: Iterable[bytes]) -> StoredArtifact:
        """Write ``chunks`` under ``key``: the bytes and their hash record go to temporary names
        (fsynced), then the record is renamed into place, then the bytes.

        A failure at any point (a full disk, a killed process) leaves no partial file under the
        final name: temporary names are ``.<name>.<hex>.tmp``, removed on every failure that
        returns here. A new key's record lands first, so its bytes are never visible without
        one; an overwrite killed between the two renames leaves a record that does not match
        the bytes, which every read reports, never a silently wrong file. Bytes identical to
        what the key already holds are not rewritten (the file is left untouched)."""
        dest = self._path(key)
        sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
        tmp, sidecar_tmp = _tmp_name(dest), _tmp_name(sidecar)
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest, size = _write_new_file(tmp, chunks)
            if not _holds(dest, sidecar, digest):
                _write_new_file(sidecar_tmp, [f"{digest}  {dest.name}\n".encode()])
                os.replace(sidecar_tmp, sidecar)
                os.replace(tmp, dest)
                _fsync_dir(dest.parent)
        except OSError as exc:
            raise self._write_failed(key, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)
            sidecar_tmp.unlink(missing_ok=True)
        return StoredArtifact(key, self.uri(key), digest, size)

    def put_file(self, key: str, src: Path) -> StoredArtifact:
        with open(src, "rb") as fin:
            return self._store(key, iter(lambda: fin.read(_CHUNK), b""))

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        return self._store(key, [data])

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        dest = self._path(key)
        tmp = _tmp_name(dest)
        sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
        created = False
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            digest, _ = _write_new_file(tmp, [data])
            try:
                os.link(tmp, dest)  # atomic create: fails if any writer got there first
            except FileExistsError:
                if not sidecar.exists():
                    # The winner's complete, fsynced file is linked but its hash record is not
                    # written yet (or it died in between): record the hash of what is there.
                    atomic_write_bytes(sidecar, f"{sha256_file(dest)[0]}  {dest.name}\n".encode())
                return False
            created = True
            atomic_write_bytes(sidecar, f"{digest}  {dest.name}\n".encode())
            return True
        except OSError as exc:
            if created:  # created but not recorded (a full disk): take the create back
                dest.unlink(missing_ok=True)
            raise self._write_failed(key, exc) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def recorded_sha256(self, key: str) -> str:
        path = self._path(key)
        sidecar = path.with_name(path.name + SIDECAR_SUFFIX)
        if not path.is_file():
            raise ArtifactNotFoundError(f"{self.uri(key)}: no such artifact")
        if not sidecar.is_file():
            raise ArtifactIntegrityError(f"{self.uri(key)}: no recorded sha256 ({sidecar.name} missing)")
        return sidecar.read_text().split()[0]

    def fetch(self, key: str, expected_sha256: str | None = None) -> Path:
        path = self._path(key)
        recorded = self.recorded_sha256(key)
        actual, size = sha256_file(path)
        _verify(key, self.uri(key), actual, size, recorded, expected_sha256)
        return path

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        path = self._path(key)
        recorded = self.recorded_sha256(key)
        data = path.read_bytes()
        _verify(key, self.uri(key), sha256_bytes(data), len(data), recorded, expected_sha256)
        return data

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def _walk(self, base: Path) -> Iterator[str]:
        for path in base.rglob("*"):
            name = path.name
            if path.is_file() and not name.endswith(SIDECAR_SUFFIX) and not name.endswith(".tmp"):
                yield path.relative_to(self._root).as_posix()

    def list_keys(self, prefix: str = "") -> list[str]:
        base = self._root / prefix if prefix else self._root
        if not base.exists():
            return []
        return sorted(k for k in self._walk(base) if k.startswith(prefix))

    def delete(self, key: str) -> None:
        path = self._path(key)
        path.unlink(missing_ok=True)
        path.with_name(path.name + SIDECAR_SUFFIX).unlink(missing_ok=True)


_PRECONDITION_FAILED = ("PreconditionFailed", "412", "ConditionalRequestConflict")


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3ArtifactStore(ArtifactStore):
    """Artifacts in ``s3://bucket/prefix/``; the sha256 travels in object metadata."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        bucket: str,
        prefix: str = "",
        cache_dir: str = "/tmp/adas-artifact-cache",
    ) -> None:
        self._client_factory = client_factory
        self._client: Any = None
        self.bucket = bucket
        self.prefix = prefix
        self.cache_dir = cache_dir

    def __repr__(self) -> str:
        return f"S3ArtifactStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, made on first use."""
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def _write_failed(self, key: str, exc: Exception) -> ArtifactWriteError:
        retries = dict(getattr(self.client.meta.config, "retries", None) or {})
        how = f"{retries.get('mode', 'legacy')} retries, at most {retries.get('total_max_attempts', '?')} attempts"
        return ArtifactWriteError(
            errno.EIO,
            f"{self.uri(key)}: could not store {key!r} ({how}; see {STORAGE_FILE.name}): {exc}; "
            "a PUT stores an object whole or not at all, so nothing new is stored under this key",
        )

    def _put_object(self, key: str, data: bytes, **conditions: str) -> StoredArtifact:
        digest = hashlib.sha256(data)
        # One PUT is atomic on S3; ChecksumSHA256 makes S3 reject a body corrupted in transit.
        # The client retries 5xx answers, throttling and timeouts with exponential backoff
        # (config/storage.yaml); a retried PUT sends the whole body again.
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._object_key(key),
                Body=data,
                Metadata={"sha256": digest.hexdigest()},
                ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
                **conditions,
            )
        except ClientError as exc:
            if conditions and _error_code(exc) in _PRECONDITION_FAILED:
                raise  # the conditional create lost: put_bytes_if_absent answers False
            raise self._write_failed(key, exc) from exc
        except BotoCoreError as exc:  # connection refused, read timeout ... after every retry
            raise self._write_failed(key, exc) from exc
        return StoredArtifact(key, self.uri(key), digest.hexdigest(), len(data))

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        return self._put_object(key, data)

    def put_file(self, key: str, src: Path) -> StoredArtifact:
        return self.put_bytes(key, Path(src).read_bytes())

    def put_bytes_if_absent(self, key: str, data: bytes) -> bool:
        try:
            # Conditional create: S3 answers 412 if the key exists. Should a retry follow a PUT
            # whose answer was lost, it gets 412 for our own object: False here, and the caller
            # reads the key back (the claim does) to learn who holds it.
            self._put_object(key, data, IfNoneMatch="*")
        except ClientError as exc:
            if _error_code(exc) in _PRECONDITION_FAILED:
                return False
            raise
        return True

    def _head(self, key: str) -> dict:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFoundError(f"{self.uri(key)}: no such artifact") from exc
            raise

    def recorded_sha256(self, key: str) -> str:
        meta = self._head(key).get("Metadata", {})
        if "sha256" not in meta:
            raise ArtifactIntegrityError(f"{self.uri(key)}: no recorded sha256 in object metadata")
        return meta["sha256"]

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFoundError(f"{self.uri(key)}: no such artifact") from exc
            raise
        data = obj["Body"].read()
        recorded = obj.get("Metadata", {}).get("sha256")
        if recorded is None:
            raise ArtifactIntegrityError(f"{self.uri(key)}: no recorded sha256 in object metadata")
        _verify(key, self.uri(key), sha256_bytes(data), len(data), recorded, expected_sha256)
        return data

    def fetch(self, key: str, expected_sha256: str | None = None) -> Path:
        local = Path(self.cache_dir) / self.bucket / self._object_key(key)
        recorded = self.recorded_sha256(key)
        if local.is_file() and sha256_file(local)[0] == recorded:
            if expected_sha256 is not None and recorded != expected_sha256:
                raise pinned_mismatch(key, self.uri(key), expected_sha256, recorded, local.stat().st_size)
            return local
        atomic_write_bytes(local, self.get_bytes(key, expected_sha256))
        return local

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
            return True
        except ArtifactNotFoundError:
            return False

    def list_keys(self, prefix: str = "") -> list[str]:
        if ".." in prefix.split("/"):
            raise ValueError(f"invalid artifact prefix {prefix!r}")
        root = self.prefix.strip("/")
        base = f"{root}/{prefix}" if root else prefix
        strip = len(self.prefix.strip("/")) + 1 if self.prefix.strip("/") else 0
        keys = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._object_key(key))


STORAGE_CONFIG_ENV = "ADAS_STORAGE_CONFIG"
STORAGE_FILE = CONFIG_DIR / "storage.yaml"


class S3ClientConfig(BaseModel):
    """How the S3 client retries and waits: botocore's retry mode, attempts and timeouts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retry_mode: Literal["standard", "adaptive"] = Field(
        default="standard",
        description="standard: exponential backoff with jitter on 5xx, throttling and timeouts; "
        "adaptive: the same plus client-side rate limiting",
    )
    max_attempts: int = Field(default=5, ge=1, le=20, description="attempts per request, the first included")
    connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    read_timeout_s: float = Field(default=60.0, gt=0, le=3600)

    def botocore_config(self) -> BotocoreConfig:
        return BotocoreConfig(
            retries={"mode": self.retry_mode, "total_max_attempts": self.max_attempts},
            connect_timeout=self.connect_timeout_s,
            read_timeout=self.read_timeout_s,
        )


class StorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    s3: S3ClientConfig = S3ClientConfig()


def load_storage_config(path: Path | None = None) -> StorageConfig:
    """``path``, else ``$ADAS_STORAGE_CONFIG``, else the shipped ``config/storage.yaml``."""
    return load_yaml_model(Path(path or os.environ.get(STORAGE_CONFIG_ENV) or STORAGE_FILE), StorageConfig)


def s3_client(
    config: S3ClientConfig | None = None, *, profile_name: str | None = None, **client_kwargs: Any
) -> Any:
    """The one way the platform builds an S3 client for the artifact store: retries and timeouts
    from ``config`` (default: :func:`load_storage_config`), ``client_kwargs`` as for
    ``boto3.client`` (region_name, endpoint_url, credentials)."""
    import boto3  # boto3's import costs ~0.3 s; only production (and its tests) need it

    config = config or load_storage_config().s3
    session = boto3.session.Session(profile_name=profile_name)
    return session.client("s3", config=config.botocore_config(), **client_kwargs)


ENVIRONMENTS = ("local", "production")


@dataclass(frozen=True)
class StoreSettings:
    """Where the artifact store of an environment lives, read from the environment in one place.

    ``ADAS_ENV=local`` (default): ``$ADAS_HOME/artifacts``. ``ADAS_ENV=production``: S3 bucket
    ``$ADAS_ARTIFACT_BUCKET`` under ``$ADAS_ARTIFACT_PREFIX`` (default ``gold``), region
    ``$AWS_REGION``, endpoint ``$ADAS_S3_ENDPOINT_URL`` (for S3-compatible stores). The Dagster
    resources and the Dagster-free entry points (registry CLI, simulation shard pods) both use it.
    """

    env: str
    root: str = ""
    bucket: str = ""
    prefix: str = ""
    region: str = ""
    endpoint_url: str | None = None

    @classmethod
    def from_env(cls, env: str | None = None, artifacts_root: Path | None = None) -> "StoreSettings":
        env = env or os.environ.get("ADAS_ENV", "local")
        if env == "local":
            if artifacts_root is None:
                artifacts_root = AdasHome.from_env().artifacts
            return cls(env=env, root=str(artifacts_root))
        if env == "production":
            return cls(
                env=env,
                bucket=os.environ.get("ADAS_ARTIFACT_BUCKET", ""),
                prefix=os.environ.get("ADAS_ARTIFACT_PREFIX", "gold"),
                region=os.environ.get("AWS_REGION", ""),
                endpoint_url=os.environ.get("ADAS_S3_ENDPOINT_URL") or None,
            )
        raise ValueError(f"ADAS_ENV={env!r} is not one of {ENVIRONMENTS}")

    def build(self) -> ArtifactStore:
        if self.env == "local":
            return LocalArtifactStore(self.root)
        if not self.bucket:
            raise ValueError("ADAS_ENV=production needs ADAS_ARTIFACT_BUCKET (the artifact bucket)")

        def client() -> Any:
            return s3_client(region_name=self.region or None, endpoint_url=self.endpoint_url)

        return S3ArtifactStore(client, self.bucket, self.prefix)
