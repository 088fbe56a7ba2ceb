"""The artifact store: local files by default, S3 in production, one interface.

Every write is atomic (temporary name then rename locally; a single PUT on S3) and records
the content's sha256 next to it (a ``sha256sum``-compatible ``<name>.sha256`` sidecar
locally, object metadata on S3). Every read re-hashes and compares, so a truncated or
tampered artifact raises :class:`ArtifactIntegrityError` naming the file and both hashes.
"""

import base64
import hashlib
import os
import shutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

SIDECAR_SUFFIX = ".sha256"
_CHUNK = 1 << 20


class ArtifactError(RuntimeError):
    """Base class for artifact store failures."""


class ArtifactNotFoundError(ArtifactError, FileNotFoundError):
    pass


class ArtifactIntegrityError(ArtifactError):
    """Stored bytes do not hash to the recorded sha256 (truncated, tampered or half-written)."""


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    uri: str
    sha256: str
    size: int

    def as_metadata(self) -> dict[str, str | int]:
        return {"key": self.key, "uri": self.uri, "sha256": self.sha256, "size": self.size}


def sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


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


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Interface shared by the local and S3 stores."""

    @abstractmethod
    def uri(self, key: str) -> str: ...

    @abstractmethod
    def put_file(self, key: str, src: Path) -> StoredArtifact: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> StoredArtifact: ...

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

    root: str

    @property
    def _root(self) -> Path:
        return Path(self.root)

    def _path(self, key: str) -> Path:
        return self._root / validate_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).resolve().as_uri() if key else self._root.resolve().as_uri()

    def _commit(self, tmp: Path, dest: Path, digest: str) -> None:
        sidecar = dest.with_name(dest.name + SIDECAR_SUFFIX)
        sidecar_tmp = sidecar.with_name(f".{sidecar.name}.{uuid.uuid4().hex}.tmp")
        sidecar_tmp.write_text(f"{digest}  {dest.name}\n")
        # The data lands first; a crash before the sidecar lands leaves a hash mismatch that
        # reads detect, never a silently wrong file.
        os.replace(tmp, dest)
        os.replace(sidecar_tmp, sidecar)
        dir_fd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _tmp_for(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")

    def put_file(self, key: str, src: Path) -> StoredArtifact:
        dest = self._path(key)
        tmp = self._tmp_for(dest)
        digest, size = hashlib.sha256(), 0
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while chunk := fin.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    fout.write(chunk)
                fout.flush()
                os.fsync(fout.fileno())
            self._commit(tmp, dest, digest.hexdigest())
        finally:
            tmp.unlink(missing_ok=True)
        return StoredArtifact(key, self.uri(key), digest.hexdigest(), size)

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        dest = self._path(key)
        tmp = self._tmp_for(dest)
        try:
            with open(tmp, "wb") as fout:
                fout.write(data)
                fout.flush()
                os.fsync(fout.fileno())
            self._commit(tmp, dest, sha256_bytes(data))
        finally:
            tmp.unlink(missing_ok=True)
        return StoredArtifact(key, self.uri(key), sha256_bytes(data), len(data))

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
        if actual != recorded:
            raise _integrity_error(self.uri(key), recorded, actual, size, "recorded")
        if expected_sha256 is not None and actual != expected_sha256:
            raise _integrity_error(self.uri(key), expected_sha256, actual, size, "expected")
        return path

    def get_bytes(self, key: str, expected_sha256: str | None = None) -> bytes:
        path = self._path(key)
        recorded = self.recorded_sha256(key)
        data = path.read_bytes()
        actual = sha256_bytes(data)
        if actual != recorded:
            raise _integrity_error(self.uri(key), recorded, actual, len(data), "recorded")
        if expected_sha256 is not None and actual != expected_sha256:
            raise _integrity_error(self.uri(key), expected_sha256, actual, len(data), "expected")
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


class S3ArtifactStore(ArtifactStore):
    """Artifacts in ``s3://bucket/prefix/``; the sha256 travels in object metadata."""

    s3: S3Resource
    bucket: str
    prefix: str = ""
    cache_dir: str = "/tmp/adas-artifact-cache"
    _client: object = PrivateAttr(default=None)

    def _c(self):
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix.strip('/')}/{key}" if self.prefix.strip("/") else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def put_bytes(self, key: str, data: bytes) -> StoredArtifact:
        digest = hashlib.sha256(data)
        # One PUT is atomic on S3; ChecksumSHA256 makes S3 reject a body corrupted in transit.
        self._c().put_object(
            Bucket=self.bucket,
            Key=self._object_key(key),
            Body=data,
            Metadata={"sha256": digest.hexdigest()},
            ChecksumSHA256=base64.b64encode(digest.digest()).decode(),
        )
        return StoredArtifact(key, self.uri(key), digest.hexdigest(), len(data))

    def put_file(self, key: str, src: Path) -> StoredArtifact:
        return self.put_bytes(key, Path(src).read_bytes())

    def _head(self, key: str) -> dict:
        from botocore.exceptions import ClientError

        try:
            return self._c().head_object(Bucket=self.bucket, Key=self._object_key(key))
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
        from botocore.exceptions import ClientError

        try:
            obj = self._c().get_object(Bucket=self.bucket, Key=self._object_key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactNotFoundError(f"{self.uri(key)}: no such artifact") from exc
            raise
        data = obj["Body"].read()
        recorded = obj.get("Metadata", {}).get("sha256")
        if recorded is None:
            raise ArtifactIntegrityError(f"{self.uri(key)}: no recorded sha256 in object metadata")
        actual = sha256_bytes(data)
        if actual != recorded:
            raise _integrity_error(self.uri(key), recorded, actual, len(data), "recorded")
        if expected_sha256 is not None and actual != expected_sha256:
            raise _integrity_error(self.uri(key), expected_sha256, actual, len(data), "expected")
        return data

    def fetch(self, key: str, expected_sha256: str | None = None) -> Path:
        local = Path(self.cache_dir) / self.bucket / self._object_key(key)
        recorded = self.recorded_sha256(key)
        if local.is_file() and sha256_file(local)[0] == recorded:
            if expected_sha256 is not None and recorded != expected_sha256:
                raise _integrity_error(
                    self.uri(key), expected_sha256, recorded, local.stat().st_size, "expected"
                )
            return local
        data = self.get_bytes(key, expected_sha256)
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, local)
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
        for page in self._c().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=base):
            keys.extend(obj["Key"][strip:] for obj in page.get("Contents", []))
        return sorted(keys)
