"""What `make demo` shows a person: one line per step (and per cell), elapsed times, a progress
display while a long step runs, the summary table at the end.

Everything else the steps write (Dagster's event stream, warnings, the output of the servers and
workers they start) goes to a log file: file descriptors 1 and 2 are pointed at it while a step
runs, so child processes land there too. ``verbose`` leaves the streams alone (the full stream,
as before). A step that raises ends the demo with its error and the log file's path.

The progress display uses ``rich`` when it is installed and the console is a terminal; plain
lines otherwise (CI logs, pipes, tests).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

try:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
except ImportError:  # rich is optional: plain lines without a live display
    Console = None  # type: ignore[assignment,misc]

ERROR_LINES = 8  # of a failing step's error, the last lines (the message, not the whole traceback)


class StepProgress:
    """Handed to a running step: what it is doing now (the live display), and lines to print
    under the step's own line once it is done (one per cell)."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress, self._task = progress, task
        self.lines: list[str] = []
        self.problems: list[str] = []

    def update(self, doing: str, completed: int | None = None, total: int | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=doing, completed=completed, total=total)

    def line(self, text: str) -> None:
        self.lines.append(text)

    def problem(self, text: str) -> None:
        """Something that fails the demo without stopping it (e.g. an automation run that failed):
        the demo goes on to its summary, prints this and exits non-zero."""
        self.problems.append(text)


@dataclass(frozen=True)
class DemoStep:
    title: str
    run: Callable[[StepProgress], str | None]  # returns a short detail for the step's line
    long: bool = False  # shows a progress display while it runs


@dataclass
class DemoConsole:
    out: TextIO
    log_path: Path
    verbose: bool = False
    _problems: list[str] = field(default_factory=list)

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    @contextlib.contextmanager
    def _to_log(self) -> Iterator[None]:
        """fds 1 and 2 (and so sys.stdout, sys.stderr and every child) into the log file."""
        if self.verbose:
            yield
            return
        sys.stdout.flush()
        sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with (
            self.log_path.open("a", buffering=1) as log,
            contextlib.redirect_stdout(log),
            contextlib.redirect_stderr(log),
        ):
            # Python-level writers (Dagster's console handler) through sys.stdout / sys.stderr,
            # child processes and C libraries through the file descriptors.
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                os.close(saved[0])
                os.close(saved[1])

    @contextlib.contextmanager
    def _display(self, step: DemoStep) -> Iterator[StepProgress]:
        live = step.long and not self.verbose and Console is not None and self.out.isatty()
        if not live:
            yield StepProgress()
            return
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TimeElapsedColumn(),
            console=Console(file=self.out),
            transient=True,
            # Prints stay in the log file: rich would otherwise show them above the display.
            redirect_stdout=False,
            redirect_stderr=False,
        )
        with progress:
            yield StepProgress(progress, progress.add_task(step.title, total=None))

    def _log_note(self, text: str) -> None:
        with self.log_path.open("a") as log:
            log.write(f"\n===== {text} =====\n")

    def run(self, steps: Sequence[DemoStep], summary: Callable[[], str]) -> int:
        """Every step in order, then ``summary()``; 0 when all went well, 1 otherwise."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.verbose:
            self.print(f"Dagster's event stream and all other output: {self.log_path}")
        t_start = time.perf_counter()
        for i, step in enumerate(steps, 1):
            head = f"[{i}/{len(steps)}] {step.title}"
            self._log_note(head)
            t0 = time.perf_counter()
            try:
                with self._display(step) as progress, self._to_log():
                    detail = step.run(progress)
            except Exception as exc:  # any step failure ends the demo, said plainly
                with self.log_path.open("a") as log:
                    traceback.print_exc(file=log)
                self.print(f"FAIL {head}  ({time.perf_counter() - t0:.1f} s)")
                message = f"{type(exc).__name__}: {exc}".strip().splitlines()
                for line in message[-ERROR_LINES:]:
                    self.print(f"     {line}")
                self.print(f"     full log: {self.log_path}")
                return 1
            self.print(
                f"ok   {head}" + (f": {detail}" if detail else "") + f"  ({time.perf_counter() - t0:.1f} s)"
            )
            for line in progress.lines:
                self.print(f"       {line}")
            self._problems += progress.problems
        try:
            with self._to_log():
                table = summary()
        except Exception as exc:  # the steps ran; say why there is no table
            with self.log_path.open("a") as log:
                traceback.print_exc(file=log)
            self.print(f"FAIL summary: {type(exc).__name__}: {exc}")
            self.print(f"     full log: {self.log_path}")
            return 1
        self.print()
        self.print(table)
        self.print()
        self.print(f"done in {time.perf_counter() - t_start:.0f} s; full log: {self.log_path}")
        for problem in self._problems:
            self.print(f"FAIL {problem}")
        return 1 if self._problems else 0


def quiet_log_path(logs_dir: Path) -> Path:
    """A fresh log file per demo run, under ``ADAS_HOME``."""
    return logs_dir / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
