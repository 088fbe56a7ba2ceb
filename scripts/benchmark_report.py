"""What the benchmark scripts share when they write their results (``--write``).

BENCHMARKS.md is append only: every benchmark adds its own section and never rewrites another's.
The CPU sections start alike (heading, UTC date, the machine as ``lscpu`` names it).
"""

import contextlib
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator

from adas.cpu_isa import host_isa
from adas.packaging.latency import machine_info
from adas.settings import REPO_ROOT

BENCHMARKS_FILE = REPO_ROOT / "BENCHMARKS.md"
# The standard background load: one busy loop pinned to core 0, i.e. one core of the node taken
# by something else (a busy CI node, a shared inference node).
_BURNER = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


@contextlib.contextmanager
def cpu_burner(active: bool = True) -> Iterator[None]:
    """Run the standard background load while the block runs (nothing when ``active`` is false)."""
    if not active:
        yield
        return
    burner = subprocess.Popen([sys.executable, "-c", _BURNER])
    try:
        time.sleep(0.5)  # let it reach its core before anything is timed
        yield
    finally:
        burner.kill()
        burner.wait()


def utc_now() -> str:
    """The date and time a section is written, as the sections show it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cpu_section_head(title: str, machine_note: str) -> list[str]:
    """The first lines of a CPU benchmark's section: heading, date, and the machine with ``machine_note``."""
    info = machine_info()
    family = f"family {info['cpu_family']} model {info.get('cpu_model_number', '?')}, " if "cpu_family" in info else ""
    return [
        "",
        f"## {title}",
        "",
        f"- date: {utc_now()}",
        f"- machine: {info.get('cpu_model', '?')} ({family}ISA {host_isa() or 'below avx2'}), "
        f"{info.get('cpus', '?')} CPUs (lscpu); {machine_note}",
    ]


def append_to_benchmarks(text: str) -> None:
    """Append ``text`` to BENCHMARKS.md (never rewrite it: other benchmarks share the file)."""
    with open(BENCHMARKS_FILE, "a") as f:
        f.write(text)
    print(f"appended to {BENCHMARKS_FILE}")
