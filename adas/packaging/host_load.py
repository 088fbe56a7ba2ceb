"""How busy the host was while a latency was measured: load average, CPU used by other work,
CPU stolen by the hypervisor.

A latency measured while something else used the cores says more about that something than
about the engine (on 2 cores, a 2-thread ONNX Runtime session runs at 1-thread speed as soon as
one core is taken). The measuring code takes a :func:`snapshot` before and after, and the
measured process reports its own CPU seconds; what the cores spent beyond that was other work.
Linux ``/proc/stat`` aggregate ``cpu`` line (user nice system idle iowait irq softirq steal, in
clock ticks); elsewhere only the load average is known and nothing is called contended.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC_STAT = Path("/proc/stat")


@dataclass(frozen=True)
class CpuSnapshot:
    monotonic_s: float
    load_1m: float
    busy_s: float | None  # CPU seconds of every core not idle since boot (None: no /proc/stat)
    steal_s: float | None


def snapshot(proc_stat: Path = PROC_STAT) -> CpuSnapshot:
    """This instant's CPU counters and 1-minute load average."""
    busy = steal = None
    try:
        first = proc_stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        first = []
    if first[:1] == ["cpu"] and len(first) >= 9:
        user, nice, system, _idle, _iowait, irq, softirq, stolen = (float(v) for v in first[1:9])
        tick = float(os.sysconf("SC_CLK_TCK"))
        busy = (user + nice + system + irq + softirq + stolen) / tick
        steal = stolen / tick
    return CpuSnapshot(time.monotonic(), os.getloadavg()[0], busy, steal)


@dataclass(frozen=True)
class HostLoad:
    """The host during one measurement: fractions of the cores' time (wall x cpus)."""

    wall_s: float
    cpus: int
    load_1m_before: float
    load_1m_after: float
    others_cpu_fraction: float | None  # used by work other than the measured process
    steal_fraction: float | None

    def contended(self, max_others: float, max_steal: float) -> str | None:
        """Why this measurement cannot judge a budget ("contended: ..."), or None."""
        reasons = []
        if self.others_cpu_fraction is not None and self.others_cpu_fraction > max_others:
            reasons.append(
                f"other work used {self.others_cpu_fraction:.0%} of the {self.cpus} cores' time "
                f"(more than {max_others:.0%})"
            )
        if self.steal_fraction is not None and self.steal_fraction > max_steal:
            reasons.append(f"the hypervisor stole {self.steal_fraction:.0%} (more than {max_steal:.0%})")
        if not reasons:
            return None
        return f"contended: {'; '.join(reasons)}; load average {self.load_1m_before:.1f} -> {self.load_1m_after:.1f}"

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)


def host_load(before: CpuSnapshot, after: CpuSnapshot, own_cpu_s: float, cpus: int | None = None) -> HostLoad:
    """The load between two snapshots, given the CPU seconds the measured process used."""
    cpus = cpus or os.cpu_count() or 1
    wall = max(after.monotonic_s - before.monotonic_s, 1e-9)
    capacity = wall * cpus
    others = steal = None
    if before.busy_s is not None and after.busy_s is not None:
        others = min(max(after.busy_s - before.busy_s - own_cpu_s, 0.0) / capacity, 1.0)
    if before.steal_s is not None and after.steal_s is not None:
        steal = min(max(after.steal_s - before.steal_s, 0.0) / capacity, 1.0)
    return HostLoad(wall, cpus, before.load_1m, after.load_1m, others, steal)
