"""Run untrusted model code in a sandboxed child process (bubblewrap + resource limits).

A candidate's model file is code: a ``.pt2`` can hold pickles, a TorchScript ``forward()``
runs whatever it was scripted to run, an ONNX custom op can be anything. Loading, smoke-testing,
exporting and timing a candidate therefore happen only in a child process that has:

* no network (a new network namespace: connections fail);
* a read-only view of the whole file system, with ``ADAS_HOME`` and credential folders masked
  (empty), the bundle (and any extra input folder) bound read-only *after* the masks, so a
  bundle fetched into ``ADAS_HOME`` stays visible while the rest of ``ADAS_HOME`` does not, and
  one private scratch directory as the only writable path (also its ``TMPDIR``);
* its own PID namespace and session, and it dies with its parent;
* limits on address space, CPU time, file size, open files and processes, and a wall-clock timeout.

Inside, :mod:`adas.sandbox_guard` adds an audit hook so that an attempt to write outside the
scratch directory, open a socket or start a process fails *with a message naming what was
tried*; the mounts contain what the hook cannot see (native code).

Everything that comes back is untrusted: results are JSON lines (bounded), files are read out of
the scratch directory with :func:`read_scratch_file` / :func:`copy_scratch_file` (no links, regular
files only, bounded sizes). A worker runs either once (:func:`run_python_module`: one result after
it exits) or as a server (:func:`start_python_module`: requests and replies as JSON lines).
"""

import json
import os
import resource
import select
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from adas.settings import AdasHome

# The last line a worker prints on stdout is its JSON result; everything else is its log.
RESULT_PREFIX = "ADAS-SANDBOX-RESULT "
# What the parent keeps of a worker's stdout / stderr, and the longest reply line it accepts.
_OUTPUT_TAIL_BYTES = 1 << 20
_STDERR_TAIL_BYTES = 64 << 10
_MAX_LINE_BYTES = 1 << 20


class SandboxError(RuntimeError):
    """The sandbox could not run, or the sandboxed code failed; the message says which and why."""


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 6 << 30
    cpu_seconds: int = 600
    file_size_bytes: int = 2 << 30
    open_files: int = 1024
    processes: int = 4096
    wall_seconds: float = 900.0


DEFAULT_LIMITS = SandboxLimits()


@dataclass(frozen=True)
class SandboxResult:
    returncode: int
    result: dict | None
    stderr: str
    stdout: str = field(repr=False, default="")


def bubblewrap() -> str:
    exe = shutil.which("bwrap")
    if exe is None:
        raise SandboxError(
            "bubblewrap (bwrap) is not installed: untrusted models are only loaded in a sandbox. "
            "Install it with `apt-get install bubblewrap` (scripts/setup_system_deps.sh does)"
        )
    return exe


def sandbox_argv(
    argv: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    mask: Sequence[Path] = (),
    read_only: Sequence[Path] = (),
) -> list[str]:
    """The bwrap command line running ``argv`` with the bundle (and ``read_only`` folders)
    read-only and ``scratch`` writable, all at their own paths (bwrap cannot create new mount
    points on a read-only root). The masks go first: later binds show through them."""
    cmd = [
        bubblewrap(),
        "--ro-bind", "/", "/",
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
    ]  # fmt: skip
    interpreter = Path(sys.executable).resolve()
    for path in mask:
        p = Path(path).resolve()
        if p.is_dir() and not interpreter.is_relative_to(p):
            cmd += ["--tmpfs", str(p)]
    for path in read_only:
        p = str(Path(path).resolve())
        cmd += ["--ro-bind", p, p]
    bundle_path, scratch_path = str(Path(bundle).resolve()), str(Path(scratch).resolve())
    cmd += [
        "--ro-bind", bundle_path, bundle_path,
        "--bind", scratch_path, scratch_path,
        "--setenv", "TMPDIR", scratch_path,
        "--setenv", "HOME", scratch_path,
        "--setenv", "ADAS_SANDBOX_BUNDLE", bundle_path,
        "--setenv", "ADAS_SANDBOX_SCRATCH", scratch_path,
        "--chdir", scratch_path,
        "--",
        *argv,
    ]  # fmt: skip
    return cmd


def _limit(limits: SandboxLimits) -> None:
    """Runs in the child between fork and exec (the limits pass through bwrap to the worker)."""
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _default_masks() -> list[Path]:
    """Masked in every sandbox: credentials a model has no business reading (the interpreter may
    live under $HOME, so $HOME itself stays visible, read-only), and ``ADAS_HOME`` (artifacts,
    registry, signing keys: never visible to a model)."""
    home = [Path.home() / d for d in (".ssh", ".aws", ".docker", ".kube", ".config/gcloud", ".gnupg")]
    return [*home, AdasHome.from_env().root]


def _spawn(
    module: str,
    args: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    limits: SandboxLimits,
    mask: Sequence[Path],
    read_only: Sequence[Path],
    env: Mapping[str, str] | None,
    stdin: int | IO[Any],
    stdout: int | IO[Any],
    stderr: IO[Any],
) -> subprocess.Popen[bytes]:
    """``python -m module args...`` started in the sandbox (the one place a sandbox is built)."""
    scratch.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", module, *args]
    child_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # The project itself, for a checkout that is not installed (the venv's editable install
        # covers the usual case).
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    cmd = sandbox_argv(
        argv, bundle=bundle, scratch=scratch, mask=[*mask, *_default_masks()], read_only=read_only
    )
    return subprocess.Popen(
        cmd,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        env=child_env,
        preexec_fn=lambda: _limit(limits),
    )


def _tail(f: IO[bytes], limit: int) -> str:
    f.seek(0, os.SEEK_END)
    f.seek(max(0, f.tell() - limit))
    return f.read().decode("utf-8", "replace")


def _result_line(line: str) -> dict | None:
    if not line.startswith(RESULT_PREFIX):
        return None
    try:
        value = json.loads(line[len(RESULT_PREFIX) :])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def run_python_module(
    module: str,
    args: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    limits: SandboxLimits = DEFAULT_LIMITS,
    mask: Sequence[Path] = (),
    read_only: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> SandboxResult:
    """``python -m module args...`` in the sandbox, to its end; its last JSON result line (see
    :data:`RESULT_PREFIX`). Output goes to files, of which only the tails are read back."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = _spawn(
            module,
            args,
            bundle=bundle,
            scratch=scratch,
            limits=limits,
            mask=mask,
            read_only=read_only,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            raise SandboxError(f"sandboxed {module} ran past its {limits.wall_seconds:g} s limit") from exc
        stdout, stderr = _tail(out, _OUTPUT_TAIL_BYTES), _tail(err, _STDERR_TAIL_BYTES)
    result = None
    for line in reversed(stdout.splitlines()):
        result = _result_line(line)
        if result is not None:
            break
    return SandboxResult(proc.returncode, result, stderr, stdout)


class SandboxedWorker:
    """A worker started by :func:`start_python_module`: JSON requests on its stdin, JSON result
    lines back (other stdout lines are the model's own prints and are skipped)."""

    def __init__(self, module: str, proc: subprocess.Popen[bytes], log: IO[bytes]) -> None:
        self.module = module
        self._proc = proc
        self._log = log
        self._buffer = b""

    def returncode(self) -> int | None:
        """None while it runs."""
        return self._proc.poll()

    def stderr_tail(self) -> str:
        return _tail(self._log, _STDERR_TAIL_BYTES)

    def _dead(self, what: str) -> SandboxError:
        self._proc.poll()
        tail = self.stderr_tail().strip().splitlines()[-1:] or [f"exit status {self._proc.returncode}"]
        return SandboxError(f"sandboxed {self.module} {what}: {tail[0][:300]}")

    def send(self, message: Mapping[str, Any]) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write((json.dumps(message) + "\n").encode())
            stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise self._dead("exited before a request") from exc

    def receive(self, timeout: float) -> dict:
        """The next result line, waiting at most ``timeout`` seconds."""
        stdout = self._proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                result = _result_line(raw.decode("utf-8", "replace"))
                if result is not None:
                    return result
            if len(self._buffer) > _MAX_LINE_BYTES:
                raise SandboxError(f"sandboxed {self.module} printed a line over {_MAX_LINE_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"sandboxed {self.module} gave no answer within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    try:
                        self._proc.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        self._proc.kill()
                    raise self._dead("exited without an answer")
                self._buffer += chunk

    def final_result(self, timeout: float) -> dict:
        """For a worker that does one job and exits: read its stdout to the end (at most
        ``timeout`` seconds) and return its *last* result line, so a line the model printed
        earlier, forged to look like a result, is never taken for the worker's own."""
        stdout = self._proc.stdout
        assert stdout is not None
        fd = stdout.fileno()
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                result = _result_line(raw.decode("utf-8", "replace"))
                if result is not None:
                    last = result
            if len(self._buffer) > _MAX_LINE_BYTES:
                raise SandboxError(f"sandboxed {self.module} printed a line over {_MAX_LINE_BYTES} bytes")
            left = deadline - time.monotonic()
            if left <= 0:
                raise SandboxError(f"sandboxed {self.module} ran past its {timeout:g} s limit")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if chunk:
                self._buffer += chunk
                continue
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            if last is None:
                raise self._dead("exited without an answer")
            return last

    def request(self, message: Mapping[str, Any], timeout: float) -> dict:
        self.send(message)
        return self.receive(timeout)

    def close(self) -> None:
        """Close its stdin (a server's cue to stop), give it a moment, then kill it."""
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._log.close()


@contextmanager
def start_python_module(
    module: str,
    args: Sequence[str],
    *,
    bundle: Path,
    scratch: Path,
    limits: SandboxLimits = DEFAULT_LIMITS,
    mask: Sequence[Path] = (),
    read_only: Sequence[Path] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[SandboxedWorker]:
    """``python -m module args...`` in the sandbox as a server; stopped when the block ends.

    A wall-clock limit per reply is the caller's (``receive(timeout)``); CPU time and memory
    are limited for the worker's whole life by ``limits``.
    """
    log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by SandboxedWorker.close)
    try:
        proc = _spawn(
            module,
            args,
            bundle=bundle,
            scratch=scratch,
            limits=limits,
            mask=mask,
            read_only=read_only,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
    except BaseException:
        log.close()
        raise
    worker = SandboxedWorker(module, proc, log)
    try:
        yield worker
    finally:
        worker.close()


# --------------------------------------------------------------------------- started ahead


class Standby:
    """One sandboxed worker started ahead of the single job it will do (see :class:`StandbyPool`).

    It is an ordinary sandbox (:func:`_spawn`: its own bwrap, namespaces and limits), started
    before its job is known: its bundle folder is bound read-only and empty, and the parent fills
    it (:meth:`deliver`) when the job arrives, then sends the request on its stdin. Until then the
    worker only imports its libraries and waits: it has never seen a bundle. Its bundle and
    scratch folders lie under its own private folder, and every standby's sandbox masks the
    folder holding them all, so no standby sees another's files. After its one job it is stopped
    and its folders deleted (:meth:`close`).
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        root: Path,
        limits: SandboxLimits,
        env: Mapping[str, str] | None,
    ) -> None:
        self.root = root
        self.bundle = root / "bundle"
        self.scratch = root / "scratch"
        root.mkdir(mode=0o700, exist_ok=True)
        self.bundle.mkdir(mode=0o700)  # fresh: a folder already there is an error
        self.scratch.mkdir(mode=0o700)
        # What was masked when it started: a later change (another ADAS_HOME) retires it unused.
        self.masks = _mask_key()
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by SandboxedWorker.close)
        try:
            proc = _spawn(
                module,
                args,
                bundle=self.bundle,
                scratch=self.scratch,
                limits=limits,
                mask=[root.parent],
                read_only=(),
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        except BaseException:
            log.close()
            shutil.rmtree(root, ignore_errors=True)
            raise
        self.worker = SandboxedWorker(module, proc, log)
        self._ready = False
        self._used = False

    def usable(self) -> bool:
        """Still waiting for its job, in a sandbox built the way one would be built now."""
        return not self._used and self.worker.returncode() is None and self.masks == _mask_key()

    def wait_ready(self, timeout: float) -> None:
        """Wait for the worker's ``{"ready": true}`` line (its imports done)."""
        if self._ready:
            return
        reply = self.worker.receive(timeout)
        if reply != {"ready": True}:
            raise SandboxError(
                f"sandboxed {self.worker.module} did not start as a standby: {str(reply)[:200]}"
            )
        self._ready = True

    def deliver(self, source: Path) -> None:
        """Put the files of ``source`` (a folder of regular files: intake's private, verified copy)
        into the standby's read-only bundle folder: hard links where one file system holds both
        (the sandbox sees them through a read-only mount either way), copies otherwise."""
        if self._used:
            raise SandboxError("a standby does one job only")
        self._used = True
        source = Path(source)
        for dirpath, dirnames, filenames in os.walk(source, followlinks=False):
            rel = Path(dirpath).relative_to(source)
            for name in dirnames:
                if not stat.S_ISDIR(os.lstat(Path(dirpath) / name).st_mode):
                    raise SandboxError(f"{rel / name} is not a plain folder")
                (self.bundle / rel / name).mkdir(mode=0o700)
            for name in filenames:
                src, dest = Path(dirpath) / name, self.bundle / rel / name
                if not stat.S_ISREG(os.lstat(src).st_mode):
                    raise SandboxError(f"{rel / name} is not a regular file")
                try:
                    os.link(src, dest, follow_symlinks=False)
                except OSError:
                    shutil.copyfile(src, dest, follow_symlinks=False)

    def close(self) -> None:
        """Stop the worker (a waiting one reads the end of its stdin and exits) and delete its
        folders."""
        try:
            self.worker.close()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _mask_key() -> tuple[str, ...]:
    return tuple(str(Path(p).resolve()) for p in _default_masks())


class StandbyPool:
    """Sandboxed workers of one module started ahead, so a job does not wait for a fresh
    interpreter's imports (torch: seconds). One standby waits at a time; :meth:`take` hands it
    out for exactly one job, stops it afterwards, and only then starts the next one (so the next
    one's imports never compete with a running job). A standby that died, or was started under
    other masks (another ``ADAS_HOME``), is replaced rather than used.

    Nothing is shared between jobs: each is a separate sandboxed process with its own folders,
    started from a parent that never ran untrusted code. ``root`` (a fresh private temporary
    folder by default) holds the standbys' folders.
    """

    def __init__(
        self,
        module: str,
        args: Sequence[str] = (),
        *,
        limits: SandboxLimits = DEFAULT_LIMITS,
        env: Mapping[str, str] | None = None,
        root: Path | None = None,
    ) -> None:
        self.module, self.args, self.limits, self.env = module, tuple(args), limits, env
        self._root = root
        self._next: Standby | None = None
        self._lock = threading.Lock()
        self._owner = os.getpid()

    def _forked(self) -> bool:
        """In a process forked from the pool's owner, the standby and its folders are the
        owner's: forget them (never stop or delete them) and start afresh."""
        if os.getpid() == self._owner:
            return False
        self._owner, self._next, self._lock, self._root = os.getpid(), None, threading.Lock(), None
        return True

    def _new(self) -> Standby:
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="adas-standby-"))
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="job-", dir=self._root))
        return Standby(self.module, self.args, root=folder, limits=self.limits, env=self.env)

    def start(self) -> None:
        """Start the next standby if none is waiting (cheap when one is)."""
        self._forked()
        with self._lock:
            if self._next is not None and not self._next.usable():
                self._next.close()
                self._next = None
            if self._next is None:
                self._next = self._new()

    def wait_ready(self, timeout: float) -> None:
        """Start a standby if none is waiting, and wait until its imports are done."""
        self.start()
        with self._lock:
            standby = self._next
        if standby is not None:
            standby.wait_ready(timeout)

    @contextmanager
    def take(self, timeout: float) -> Iterator[Standby]:
        """The waiting standby (started now if there is none), ready, for one job; stopped and
        deleted when the block ends, and the next one started."""
        self.start()
        with self._lock:
            standby, self._next = self._next, None
        assert standby is not None
        try:
            standby.wait_ready(timeout)
            yield standby
        finally:
            standby.close()
            self.start()

    def close(self) -> None:
        if self._forked():
            return
        with self._lock:
            if self._next is not None:
                self._next.close()
                self._next = None
            if self._root is not None:
                shutil.rmtree(self._root, ignore_errors=True)


# --------------------------------------------------------------------------- files coming back


@contextmanager
def _open_scratch_file(scratch: Path, name: str, max_bytes: int) -> Iterator[BinaryIO]:
    """``scratch/name`` opened without following links; a regular file with one link, at most
    ``max_bytes`` long (checked on the open file, so a later swap of the name changes nothing)."""
    if not name or "/" in name or name in (".", ".."):
        raise SandboxError(f"{name!r} is not a plain file name")
    where = f"sandbox output {name}"
    dir_fd = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError as exc:
            raise SandboxError(f"{where} is missing") from exc
        except OSError as exc:  # ELOOP: a symbolic link
            raise SandboxError(f"{where} cannot be opened without following links: {exc.strerror}") from exc
    finally:
        os.close(dir_fd)
    f = os.fdopen(fd, "rb")
    with f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SandboxError(f"{where} is not a regular file")
        if st.st_nlink != 1:
            raise SandboxError(f"{where} has {st.st_nlink} links (a hard link)")
        if st.st_size > max_bytes:
            raise SandboxError(f"{where} is {st.st_size:,} bytes, over the {max_bytes:,} byte limit")
        yield f


def read_scratch_file(scratch: Path, name: str, max_bytes: int) -> bytes:
    """The bytes of a file a sandboxed worker wrote into ``scratch`` (see :func:`_open_scratch_file`)."""
    with _open_scratch_file(scratch, name, max_bytes) as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SandboxError(f"sandbox output {name} grew over the {max_bytes:,} byte limit while read")
    return data


def copy_scratch_file(scratch: Path, name: str, dest: Path, max_bytes: int) -> Path:
    """Copy a file a sandboxed worker wrote into ``scratch`` to ``dest`` (outside the worker's
    reach), streamed and bounded; returns ``dest``."""
    copied = 0
    try:
        with _open_scratch_file(scratch, name, max_bytes) as src, open(dest, "wb") as out:
            while chunk := src.read(1 << 20):
                copied += len(chunk)
                if copied > max_bytes:
                    raise SandboxError(
                        f"sandbox output {name} grew over the {max_bytes:,} byte limit while read"
                    )
                out.write(chunk)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest
