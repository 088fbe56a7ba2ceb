"""Read a bundle as untrusted input: regular files inside the bundle folder only, within limits.

The file system is not trusted. A bundle may hold symbolic links (to ``/etc/passwd``, to the
signing key), hard links, device files, FIFOs or sockets, absurd numbers or sizes of files,
undecodable names, or change while it is being read. Every rule here is checked before any byte
of a file is copied anywhere, and each refusal names the path and the rule:

* the bundle folder itself, and every entry at any depth, is a regular file or a folder,
  never a symbolic link, hard link (link count > 1), device, FIFO or socket;
* files are opened component by component relative to the bundle folder with ``O_NOFOLLOW``,
  and the opened file must be the one that was listed (same device and inode), so a swap between
  listing and reading is caught;
* limits from ``config/intake.yaml``: number of files, depth, size per file and in total.
"""

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ConfigDict, Field

from adas.config_errors import load_yaml_model
from adas.settings import CONFIG_DIR
from adas.storage import sha256_stream

INTAKE_FILE = CONFIG_DIR / "intake.yaml"


class BundleRejected(ValueError):
    """The bundle breaks its contract; ``field`` names where (``file: path.to.field``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class IntakeLimits(BaseModel):
    """``config/intake.yaml``: what intake accepts before it reads a byte of a bundle's files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = 1
    max_files: int = Field(64, ge=1)
    max_depth: int = Field(4, ge=1)
    max_file_bytes: int = Field(512 << 20, ge=1)
    max_total_bytes: int = Field(1 << 30, ge=1)
    max_name_length: int = Field(128, ge=8)
    max_contract_bytes: int = Field(64 << 10, ge=256)
    max_lineage_bytes: int = Field(64 << 10, ge=256)
    max_string_length: int = Field(256, ge=16)
    max_yaml_aliases: int = Field(8, ge=0)
    max_nesting: int = Field(16, ge=2)
    # Largest input a smoke forward may allocate: channels x height x width of one image.
    max_input_elements: int = Field(3 * 4096 * 4096, ge=1)


def load_intake_limits(path: Path | str = INTAKE_FILE) -> IntakeLimits:
    return load_yaml_model(Path(path), IntakeLimits)


@dataclass(frozen=True)
class BundleFile:
    rel: str
    size: int
    device: int
    inode: int


def _check_name(name: str, rel: str, limits: IntakeLimits) -> None:
    if any("\udc80" <= ch <= "\udcff" for ch in name):
        raise BundleRejected(rel, "file name is not valid UTF-8")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise BundleRejected(repr(rel), "file name holds a control character")
    if len(name) > limits.max_name_length:
        raise BundleRejected(rel[:80] + "...", f"file name longer than {limits.max_name_length} characters")


def list_bundle_files(root: Path, limits: IntakeLimits) -> list[BundleFile]:
    """Every file of the bundle (hidden names skipped), refusing anything but regular files and
    folders, and enforcing the limits, without following a single link."""
    root = Path(root)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        raise BundleRejected("bundle", f"{root} does not exist") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleRejected("bundle", f"{root.name} is a symbolic link; drop the folder itself")
    if not stat.S_ISDIR(st.st_mode):
        raise BundleRejected("bundle", f"{root.name} is not a directory")
    files: list[BundleFile] = []
    total = 0
    stack: list[tuple[Path, str, int]] = [(root, "", 1)]
    while stack:
        folder, prefix, depth = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise BundleRejected(prefix or "bundle", f"cannot list the folder: {exc.strerror}") from exc
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            _check_name(entry.name, rel, limits)
            est = entry.stat(follow_symlinks=False)
            mode = est.st_mode
            if stat.S_ISLNK(mode):
                raise BundleRejected(rel, "is a symbolic link; bundles hold regular files only")
            if stat.S_ISDIR(mode):
                if entry.name.startswith("."):
                    continue  # hidden folders (.git, .cache) are not part of the bundle: never read
                if depth >= limits.max_depth:
                    raise BundleRejected(rel, f"nested deeper than {limits.max_depth} folders")
                stack.append((Path(entry.path), f"{rel}/", depth + 1))
                continue
            if not stat.S_ISREG(mode):
                raise BundleRejected(rel, f"is a {_kind(mode)}; bundles hold regular files only")
            if entry.name.startswith("."):
                continue
            if est.st_nlink > 1:
                raise BundleRejected(
                    rel, f"is a hard link ({est.st_nlink} names for one file); copy the file instead"
                )
            if est.st_size > limits.max_file_bytes:
                raise BundleRejected(
                    rel, f"is {est.st_size} bytes, over the {limits.max_file_bytes}-byte limit"
                )
            total += est.st_size
            if total > limits.max_total_bytes:
                raise BundleRejected("bundle", f"holds more than {limits.max_total_bytes} bytes")
            files.append(BundleFile(rel, est.st_size, est.st_dev, est.st_ino))
            if len(files) > limits.max_files:
                raise BundleRejected("bundle", f"holds more than {limits.max_files} files")
    return sorted(files, key=lambda f: f.rel)


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


@contextmanager
def open_bundle_file(root: Path, item: BundleFile) -> Iterator[BinaryIO]:
    """The listed file, opened without following any link, and proven to be the listed one."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    fds = [dir_fd]
    try:
        parts = item.rel.split("/")
        for part in parts[:-1]:
            dir_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
            fds.append(dir_fd)
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            raise BundleRejected(item.rel, f"cannot be opened as a regular file: {exc.strerror}") from exc
        st = os.fstat(fd)
        if (
            not stat.S_ISREG(st.st_mode)
            or st.st_nlink > 1
            or (st.st_dev, st.st_ino) != (item.device, item.inode)
        ):
            os.close(fd)
            raise BundleRejected(item.rel, "changed while intake was reading the bundle")
        with os.fdopen(fd, "rb") as f:
            yield f
    finally:
        for d in reversed(fds):
            os.close(d)


def read_bundle_bytes(root: Path, item: BundleFile, max_bytes: int) -> bytes:
    if item.size > max_bytes:
        raise BundleRejected(item.rel, f"is {item.size} bytes, over the {max_bytes}-byte limit for this file")
    with open_bundle_file(root, item) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise BundleRejected(item.rel, "grew while intake was reading it")
    return data


def hash_bundle_file(root: Path, item: BundleFile) -> str:
    with open_bundle_file(root, item) as f:
        sha, n = sha256_stream(f)
    if n != item.size:
        raise BundleRejected(item.rel, f"changed size while intake was reading it ({item.size} -> {n} bytes)")
    return sha


def copy_bundle_file(root: Path, item: BundleFile, dest: Path) -> str:
    """Copy the listed file to ``dest`` (a new file) and return the sha256 of what was copied."""
    with open_bundle_file(root, item) as fin, open(dest, "xb") as fout:
        sha, _ = sha256_stream(fin, copy_to=fout)
        fout.flush()
        os.fsync(fout.fileno())
    return sha
