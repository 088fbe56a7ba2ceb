"""How fast the Dagster UI's asset graph page loads, in Debian's Chromium (Playwright).

Starts `dagster dev` on ADAS_HOME's instance (run `make demo` first so the graph has data),
then loads the global lineage with every group expanded N times and reports the time from
navigation to the last asset node being visible (median and worst).

    python scripts/benchmark_ui.py [--runs 5] [--write]
"""

import argparse
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from adas.packaging.staging import cpu_model  # noqa: E402
from adas.settings import AdasHome  # noqa: E402
from resources.dagster_dev import dagster_dev, launch_chromium  # noqa: E402
from resources.instance import prepare_local_instance  # noqa: E402
from scripts.benchmark_report import append_to_benchmarks  # noqa: E402

GROUPS = ("intake", "packaging", "evaluation", "simulation", "registry")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    prepare_local_instance(AdasHome.from_env())
    env = {**os.environ, "ADAS_SENSORS_DEFAULT": "stopped"}
    times: list[float] = []
    expanded = ",".join(f"global@global:{g}" for g in GROUPS)
    with dagster_dev(env) as url, sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1800, "height": 2200})
        page.goto(f"{url}/asset-groups?expanded={expanded}")  # warm-up: code location loaded, caches hot
        page.get_by_text("registry_entry").first.wait_for(timeout=60_000)
        for _ in range(args.runs):
            t0 = time.perf_counter()
            page.goto(f"{url}/asset-groups?expanded={expanded}")
            page.get_by_text("registry_entry").first.wait_for(timeout=60_000)
            times.append(time.perf_counter() - t0)
        browser.close()
    median, worst = statistics.median(times), max(times)
    line = f"asset graph (5 groups expanded) to last node visible: median {median:.2f} s, worst {worst:.2f} s over {len(times)} loads"
    print(line)
    if args.write:
        append_to_benchmarks(
            f"\n## UI: asset graph page load\n\n- **Machine:** {cpu_model()}, {os.cpu_count()} cores; "
            f"**date:** {datetime.now(UTC):%Y-%m-%d}; Debian chromium (headless) via Playwright, "
            "`dagster dev` on the `make demo` instance; `python scripts/benchmark_ui.py --runs "
            f"{args.runs}`.\n- {line} (target < 3 s).\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
