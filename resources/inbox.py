"""The candidate inbox: where people (or a training pipeline) drop checkpoint bundles.

A local folder by default, an S3 prefix in production. A bundle is one sub-folder (prefix).
Names starting with '.' are ignored so a drop can be made atomic (copy to ``.name`` then
rename), and a bundle must have been quiet for ``settle_seconds`` before it is considered,
so a slow copy is never judged half-written. Nothing is ever deleted: rejected bundles move
to ``rejected/`` with a ``REJECTED.txt``; accepted ones move to ``accepted/`` once stored.
"""

import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import PrivateAttr

REJECTED_DIR = "rejected"
ACCEPTED_DIR = "accepted"
REASON_FILE = "REJECTED.txt"
_RESERVED = {REJECTED_DIR, ACCEPTED_DIR}


@dataclass(frozen=True)
class InboxItem:
    name: str
    location: str


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")


def reason_text(name: str, field: str, reason: str) -> str:
    return (
        f"bundle: {name}\nrejected_at: {datetime.now(UTC).isoformat()}\nfield: {field}\nreason: {reason}\n"
        "\nFix the field above and drop the corrected bundle into the inbox again.\n"
    )


class Inbox(dg.ConfigurableResource, ABC):
    settle_seconds: float = 3.0

    @abstractmethod
    def location(self) -> str: ...

    @abstractmethod
    def pending(self) -> list[InboxItem]:
        """Bundles waiting for intake, oldest name first."""

    @abstractmethod
    def drop_stamp(self, item: InboxItem) -> str:
        """What tells two drops under one name apart (read only: never changes the bundle)."""

    @abstractmethod
    def local_copy(self, item: InboxItem) -> Path:
        """A local folder holding the bundle's files (the folder itself for a local inbox)."""

    @abstractmethod
    def reject(self, item: InboxItem, field: str, reason: str) -> str:
        """Move the bundle aside with a reason file; return where it went."""

    @abstractmethod
    def archive(self, item: InboxItem, label: str) -> str:
        """Move an accepted bundle out of the way; return where it went."""


class LocalInbox(Inbox):
    path: str

    def location(self) -> str:
        return str(Path(self.path).resolve())

    def pending(self) -> list[InboxItem]:
        root = Path(self.path)
        if not root.is_dir():
            return []
        now = time.time()
        items = []
        for d in sorted(root.iterdir()):
            # lstat: a symlinked bundle is still listed (its intake run rejects it, naming why).
            if d.name.startswith(".") or d.name in _RESERVED or not (d.is_dir() or d.is_symlink()):
                continue
            if now - _newest_mtime(d) >= self.settle_seconds:
                items.append(InboxItem(d.name, str(d)))
        return items

    def drop_stamp(self, item: InboxItem) -> str:
        st = Path(item.location).lstat()
        return f"{st.st_ino}-{st.st_mtime_ns}"

    def local_copy(self, item: InboxItem) -> Path:
        return Path(item.location)

    def _move(self, item: InboxItem, sub: str, label: str) -> Path:
        dest = Path(self.path) / sub / f"{label}-{_stamp()}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = Path(item.location)
        if source.is_symlink() or not source.is_dir():
            # Never write through a link: the link itself goes into a folder of its own.
            dest.mkdir()
            source.rename(dest / source.name)
            return dest
        # A rename within one filesystem: the bundle is either still in the inbox or fully moved.
        source.rename(dest)
        return dest

    def reject(self, item: InboxItem, field: str, reason: str) -> str:
        dest = self._move(item, REJECTED_DIR, item.name)
        (dest / REASON_FILE).write_text(reason_text(item.name, field, reason))
        return str(dest)

    def archive(self, item: InboxItem, label: str) -> str:
        return str(self._move(item, ACCEPTED_DIR, label))


def _newest_mtime(folder: Path) -> float:
    """Newest modification under ``folder`` without following links (a looping or dangling link
    must not stop the listing of the other bundles)."""
    newest = folder.lstat().st_mtime
    stack = [folder] if not folder.is_symlink() else []
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for e in entries:
            try:
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            newest = max(newest, st.st_mtime)
            if e.is_dir(follow_symlinks=False):
                stack.append(Path(e.path))
    return newest


class S3Inbox(Inbox):
    s3: S3Resource
    bucket: str
    prefix: str = "inbox"
    _client: object = PrivateAttr(default=None)

    def _c(self) -> Any:  # boto3 clients are untyped
        if self._client is None:
            self._client = self.s3.get_client()
        return self._client

    def _root(self) -> str:
        return self.prefix.strip("/") + "/"

    def location(self) -> str:
        return f"s3://{self.bucket}/{self._root()}"

    def _objects(self, prefix: str) -> list[dict]:
        out: list[dict] = []
        for page in self._c().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def pending(self) -> list[InboxItem]:
        groups: dict[str, list[dict]] = {}
        for obj in self._objects(self._root()):
            rest = obj["Key"][len(self._root()) :]
            if "/" not in rest:
                continue
            name = rest.split("/", 1)[0]
            if name.startswith(".") or name in _RESERVED:
                continue
            groups.setdefault(name, []).append(obj)
        now = datetime.now(UTC).timestamp()
        return [
            InboxItem(name, f"{self._root()}{name}/")
            for name, objs in sorted(groups.items())
            if now - max(o["LastModified"].timestamp() for o in objs) >= self.settle_seconds
        ]

    def drop_stamp(self, item: InboxItem) -> str:
        objs = self._objects(item.location)
        return str(max((o["LastModified"].timestamp() for o in objs), default=0.0))

    def local_copy(self, item: InboxItem) -> Path:
        dest = Path(tempfile.mkdtemp(prefix=f"inbox-{item.name}-"))
        for obj in self._objects(item.location):
            target = dest / obj["Key"][len(item.location) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            self._c().download_file(self.bucket, obj["Key"], str(target))
        return dest

    def _move(self, item: InboxItem, sub: str, label: str) -> str:
        dest = f"{self._root()}{sub}/{label}-{_stamp()}/"
        objs = self._objects(item.location)
        # Copy everything first, delete only after every copy succeeded: nothing is lost.
        for obj in objs:
            self._c().copy_object(
                Bucket=self.bucket,
                Key=dest + obj["Key"][len(item.location) :],
                CopySource={"Bucket": self.bucket, "Key": obj["Key"]},
            )
        for obj in objs:
            self._c().delete_object(Bucket=self.bucket, Key=obj["Key"])
        return dest

    def reject(self, item: InboxItem, field: str, reason: str) -> str:
        dest = self._move(item, REJECTED_DIR, item.name)
        self._c().put_object(
            Bucket=self.bucket, Key=dest + REASON_FILE, Body=reason_text(item.name, field, reason).encode()
        )
        return f"s3://{self.bucket}/{dest}"

    def archive(self, item: InboxItem, label: str) -> str:
        return f"s3://{self.bucket}/{self._move(item, ACCEPTED_DIR, label)}"


def cleanup_local_copy(inbox: Inbox, item: InboxItem, path: Path) -> None:
    """Remove a temporary download (never the inbox folder itself)."""
    if Path(item.location) != path and path.is_dir() and path.name.startswith("inbox-"):
        shutil.rmtree(path, ignore_errors=True)
