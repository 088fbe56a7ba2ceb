"""The no-click loop as deployed: a real ``dagster-daemon`` (sensors, automation, run queue, run
launcher) on a temporary instance, a bundle dropped into the inbox, and what the instance then
records, read back for the order of events (the slow test) and per-asset timings (the waterfall
of ``scripts/benchmark_loop.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import dagster as dg

from adas.packaging.local_oci_registry import stop_local_registry
from adas.packaging.oci_settings import PORT_ENV
from adas.packaging.triton_server import free_port
from adas.service_process import start_service, stop_service
from adas.settings import AdasHome
from jobs.automation_driver import drop_bundle
from tests.operations.bundle_world import CPU_CELLS, TINY_GOLDEN_DATA, fast_packaging_config

LoopSize = Literal["tiny", "demo"]

REPO = Path(__file__).resolve().parents[2]
AUTOMATION_SENSOR = "per_target_automation"
# What each cell's registry entry is downstream of, in the order the loop must produce them.
CELL_CHAIN = ("engine", "triton_model_repository", "model_pack", "published_pack", "registry_entry")
GATES = ("eval_report", "regression_gate", "sim_verdict")


class LoopError(RuntimeError):
    """The daemon-driven loop failed or stalled; the message names the run or what is missing."""


@dataclass
class StepTiming:
    run_id: str
    asset: str
    partition: str | None
    start: float
    end: float


@dataclass
class LoopResult:
    home: AdasHome
    dropped_at: float
    finished_at: float
    steps: list[StepTiming] = field(default_factory=list)
    daemon_log: Path | None = None

    @property
    def wall_s(self) -> float:
        return self.finished_at - self.dropped_at

    def busy_s(self) -> float:
        """Seconds during which at least one step executed (overlapping steps counted once)."""
        spans = sorted((max(s.start, self.dropped_at), s.end) for s in self.steps if s.end > self.dropped_at)
        busy, cur_start, cur_end = 0.0, None, None
        for start, end in spans:
            if cur_end is None or start > cur_end:
                if cur_end is not None and cur_start is not None:
                    busy += cur_end - cur_start
                cur_start, cur_end = start, end
            else:
                cur_end = max(cur_end, end)
        if cur_end is not None and cur_start is not None:
            busy += cur_end - cur_start
        return busy


def _environment(home: AdasHome, config_dir: Path, size: LoopSize) -> dict[str, str]:
    """The daemon's environment: this home, CPU cells, an OCI registry port of its own; for the
    tiny world the fast packaging config and the quick sweep (the same settings as the in-process
    end-to-end world), for the demo world the shipped ones."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ADAS_AUTOMATION_DEVICES", "ADAS_ENV", "ADAS_PACKAGING_CONFIG", "ADAS_SIM_SWEEP")
    }
    env.update(
        ADAS_HOME=str(home.root),
        DAGSTER_HOME=str(home.dagster_home),
        ADAS_SENSORS_DEFAULT="running",
        **{PORT_ENV: str(free_port())},
    )
    if size == "tiny":
        config_dir.mkdir(parents=True, exist_ok=True)
        env.update(ADAS_PACKAGING_CONFIG=str(fast_packaging_config(config_dir)), ADAS_SIM_SWEEP="quick")
    return env


def _automation_ticks(instance: dg.DagsterInstance) -> int:
    """Completed ticks of the automation sensor the daemon recorded on this instance."""
    for state in instance.all_instigator_state():
        if state.instigator_name == AUTOMATION_SENSOR:
            ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
            return sum(1 for t in ticks if t.status.value in ("SUCCESS", "SKIPPED"))
    return 0


def _wait(
    what: str, done: Callable[[], bool], timeout_s: float, daemon: subprocess.Popen, poll_s: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if daemon.poll() is not None:
            raise LoopError(f"dagster-daemon exited ({daemon.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise LoopError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _failed_runs(instance: dg.DagsterInstance) -> list[str]:
    failed = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    return [
        f"{r.dagster_run.run_id} ({r.dagster_run.job_name}, {r.dagster_run.tags.get('dagster/partition')})"
        for r in failed
    ]


def _entries_done(instance: dg.DagsterInstance) -> bool:
    done = set(instance.get_materialized_partitions(dg.AssetKey("registry_entry")))
    return set(CPU_CELLS) <= done


def step_timings(instance: dg.DagsterInstance) -> list[StepTiming]:
    """Every executed step's asset, partition and wall-clock span, from the instance's event log."""
    out: list[StepTiming] = []
    for record in instance.get_run_records():
        run = record.dagster_run
        starts: dict[str, float] = {}
        for entry in instance.all_logs(run.run_id):
            ev = entry.dagster_event
            if ev is None or ev.step_key is None:
                continue
            if ev.event_type == dg.DagsterEventType.STEP_START:
                starts[ev.step_key] = entry.timestamp
            elif (
                ev.event_type in (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE)
                and ev.step_key in starts
            ):
                partition = run.tags.get("dagster/partition")
                out.append(
                    StepTiming(run.run_id, ev.step_key, partition, starts[ev.step_key], entry.timestamp)
                )
    return sorted(out, key=lambda s: s.start)


@contextmanager
def daemon_loop(
    tmp: Path, bundle: Path, name: str, timeout_s: float = 3600.0, size: LoopSize = "tiny"
) -> Iterator[LoopResult]:
    """Start ``dagster-daemon`` on a fresh home, make the golden data, drop ``bundle`` as ``name``
    and wait until both CPU cells have a registry entry (or a run fails).

    ``size``: ``tiny`` (the tests' world: tiny golden data, fast packaging config, quick sweep) or
    ``demo`` (what ``make demo`` runs: the demo dataset, the shipped packaging config and sweep)."""
    from adas_assets.definitions import make_definitions
    from resources import build_resources
    from resources.instance import prepare_local_instance

    home = AdasHome(tmp / "home")
    env = _environment(home, tmp / "config", size)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    daemon_log = tmp / "daemon.log"
    daemon: subprocess.Popen | None = None
    try:
        prepare_local_instance(home)
        with dg.DagsterInstance.get() as instance:
            with daemon_log.open("wb") as log:
                daemon = start_service(
                    [str(REPO / ".venv/bin/dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
                    log=log, env=env, cwd=REPO,
                )  # fmt: skip
            # Automation evaluates changes since its previous tick: let it tick once first, so
            # that the golden data and the bundle are changes it reacts to.
            _wait("the automation sensor's first tick", lambda: _automation_ticks(instance) >= 1, 600, daemon)
            defs = make_definitions(build_resources("local", home))
            golden = defs.resolve_job_def("golden_data").execute_in_process(
                instance=instance, run_config=TINY_GOLDEN_DATA if size == "tiny" else None
            )
            if not golden.success:
                raise LoopError("golden_data failed")
            dropped_at = time.time()
            drop_bundle(bundle, home.inbox, name)

            def finished() -> bool:
                if failed := _failed_runs(instance):
                    raise LoopError(f"runs failed: {', '.join(failed)}; daemon log {daemon_log}")
                return _entries_done(instance)

            _wait("registry entries on both CPU cells", finished, timeout_s, daemon, poll_s=10.0)
            result = LoopResult(home, dropped_at, time.time(), step_timings(instance), daemon_log)
            yield result
    finally:
        if daemon is not None:
            stop_service(daemon, stop_signal=signal.SIGTERM, timeout_s=60, reap_group=True)
        stop_local_registry(home.oci_registry)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
