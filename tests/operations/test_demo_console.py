"""The demo a person can read (issue #16 item 5), on a stubbed step sequence through the demo's
own output layer: the quiet console stays short and ends with the summary table, everything the
steps print (Dagster's event stream, child processes) lands in the log file, and a failing step
is named with its error and the log file's path."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from adas.packaging.local_oci_registry import stop_local_registry
from adas.packaging.oci_settings import PORT_ENV
from adas.packaging.triton_server import free_port
from jobs.demo_console import DemoConsole, DemoStep, StepProgress

REPO = Path(__file__).resolve().parents[2]
MAX_QUIET_LINES = 60
TABLE_HEAD = "summary (supported CPU cells):"


def _noisy(progress: StepProgress) -> str:
    """What a Dagster run does to the terminal: DEBUG events, warnings, a child's output."""
    for i in range(400):
        print(f"2026-01-01 - dagster - DEBUG - golden_data - event {i}")
    print("a warning on stderr", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "print('child process output')"], check=True)
    progress.update("working", completed=1, total=2)
    return "3 assets"


def _per_cell(progress: StepProgress) -> str:
    for cell in ("x86-cpu|fp32", "x86-cpu|int8"):
        print(f"DEBUG engine [{cell}] STEP_SUCCESS")
        progress.line(f"{cell:18s}  9 runs   12.0 s  ok")
    return "18 runs until idle"


def _summary() -> str:
    print("full report: every per-target asset and every check")  # goes to the log
    return "\n".join([TABLE_HEAD, "  x86-cpu|fp32  built  pass  pass  GREEN  GREEN  8/8 passed"])


def _console(tmp_path: Path) -> tuple[DemoConsole, io.StringIO]:
    out = io.StringIO()
    return DemoConsole(out, tmp_path / "logs" / "demo.log"), out


def test_quiet_demo_is_short_ends_with_the_summary_and_logs_the_stream(tmp_path: Path) -> None:
    console, out = _console(tmp_path)
    steps = [
        DemoStep("golden data (tiny)", _noisy, long=True),
        DemoStep("drop the candidate", lambda p: "inbox/candidate-demo"),
        DemoStep("declarative automation until idle", _per_cell, long=True),
    ]
    assert console.run(steps, _summary) == 0
    lines = out.getvalue().splitlines()
    assert len(lines) <= MAX_QUIET_LINES, out.getvalue()
    assert str(console.log_path) in lines[0]
    assert [line.split("  (")[0] for line in lines if line.startswith("ok ")] == [
        "ok   [1/3] golden data (tiny): 3 assets",
        "ok   [2/3] drop the candidate: inbox/candidate-demo",
        "ok   [3/3] declarative automation until idle: 18 runs until idle",
    ]
    assert any("x86-cpu|int8" in line and "9 runs" in line for line in lines)  # one line per cell
    assert TABLE_HEAD in lines and "DEBUG" not in out.getvalue()
    log = console.log_path.read_text()
    for noise in ("event 399", "a warning on stderr", "child process output", "STEP_SUCCESS", "full report"):
        assert noise in log, noise


def test_a_failing_step_prints_its_error_and_the_log_path_and_stops(tmp_path: Path) -> None:
    console, out = _console(tmp_path)
    ran: list[str] = []

    def broken(progress: StepProgress) -> str:
        print("dagster DEBUG before the failure")
        raise RuntimeError(
            "candidate intake failed: step candidate_checkpoint: contract.yaml: input.shape missing"
        )

    steps = [
        DemoStep("golden data", lambda p: "ok"),
        DemoStep("inbox sensor -> candidate intake", broken),
        DemoStep("automation", lambda p: ran.append("automation") or "never"),
    ]
    assert console.run(steps, _summary) == 1
    text = out.getvalue()
    assert "FAIL [2/3] inbox sensor -> candidate intake" in text
    assert (
        "RuntimeError: candidate intake failed: step candidate_checkpoint: contract.yaml: input.shape missing"
        in text
    )
    assert f"full log: {console.log_path}" in text
    assert ran == [] and TABLE_HEAD not in text  # nothing after the failing step
    assert "Traceback" in console.log_path.read_text() and "Traceback" not in text


def test_a_failed_automation_run_fails_the_demo_after_its_summary(tmp_path: Path) -> None:
    console, out = _console(tmp_path)

    def with_failed_run(progress: StepProgress) -> str:
        progress.problem("automation run 1a2b3c4d [x86-cpu|int8]: step engine: boom")
        return "18 runs until idle"

    assert console.run([DemoStep("automation", with_failed_run)], _summary) == 1
    text = out.getvalue()
    assert TABLE_HEAD in text
    assert text.rstrip().endswith("FAIL automation run 1a2b3c4d [x86-cpu|int8]: step engine: boom")


def test_verbose_keeps_the_stream_on_the_console(tmp_path: Path, capfd) -> None:  # type: ignore[no-untyped-def]
    out = io.StringIO()
    console = DemoConsole(out, tmp_path / "demo.log", verbose=True)
    assert console.run([DemoStep("golden data", _noisy)], _summary) == 0
    assert "event 399" in capfd.readouterr().out
    assert "event 399" not in console.log_path.read_text()


@pytest.mark.slow
@pytest.mark.nightly  # the whole demo, ~15 min on 2 cores
def test_the_real_demo_is_quiet_and_ends_with_its_summary(tmp_path: Path) -> None:
    # Its own OCI registry port: a developer's demo may hold the default one.
    env = {**os.environ, "ADAS_HOME": str(tmp_path / "home"), PORT_ENV: str(free_port())}
    for name in ("ADAS_AUTOMATION_DEVICES", "ADAS_ENV", "DAGSTER_HOME"):
        env.pop(name, None)
    try:
        run = subprocess.run(
            [sys.executable, "scripts/run_demo.py"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
        )
    finally:  # the demo leaves its registry running, as a developer's would
        stop_local_registry(tmp_path / "home" / "oci-registry")
    lines = run.stdout.splitlines()
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert len(lines) <= MAX_QUIET_LINES, run.stdout
    assert TABLE_HEAD in lines
    log = Path(lines[0].rsplit(": ", 1)[1])
    assert log.parent == tmp_path / "home" / "logs" and "STEP_SUCCESS" in log.read_text()
