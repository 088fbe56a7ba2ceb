"""What the benchmark scripts share when they write their results (``--write``).

BENCHMARKS.md is append only: every benchmark adds its own section and never rewrites another's.
The CPU sections start alike (heading, UTC date, the machine as ``lscpu`` names it).
"""

import datetime as dt

from adas.packaging.latency import machine_info
from adas.settings import REPO_ROOT

BENCHMARKS_FILE = REPO_ROOT / "BENCHMARKS.md"


def utc_now() -> str:
    """The date and time a section is written, as the sections show it."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def cpu_section_head(title: str, machine_note: str) -> list[str]:
    """The first lines of a CPU benchmark's section: heading, date, and the machine with ``machine_note``."""
    info = machine_info()
    return [
        "",
        f"## {title}",
        "",
        f"- date: {utc_now()}",
        f"- machine: {info.get('cpu_model', '?')}, {info.get('cpus', '?')} CPUs (lscpu); {machine_note}",
    ]


def append_to_benchmarks(text: str) -> None:
    """Append ``text`` to BENCHMARKS.md (never rewrite it: other benchmarks share the file)."""
    with open(BENCHMARKS_FILE, "a") as f:
        f.write(text)
    print(f"appended to {BENCHMARKS_FILE}")
