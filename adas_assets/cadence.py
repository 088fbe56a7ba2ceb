"""When the schedules run, and how fresh the assets they refresh are expected to be.

The cron times of ``jobs/`` and the freshness policies of the assets those schedules refresh live
side by side here, so a schedule moved in time cannot leave a policy behind. A freshness policy
only asks where staleness means something to a person reading the UI: the engines (are they built
against the runtime stack installed now?), the evaluation (is the report a promotion reads
recent?) and the golden dataset every evaluation scores against. Dagster judges an asset by its
latest materialization of any partition; the UI shows PASS, WARN or FAIL once freshness is
enabled in the instance's ``dagster.yaml`` (``freshness: enabled: true``).
"""

from datetime import timedelta

import dagster as dg

# --- Schedules (UTC) -----------------------------------------------------------------------------
NIGHTLY_ENGINE_REBUILD_CRON = "0 1 * * *"  # 01:00: every automated cell's engine, Triton repository, pack
NIGHTLY_REGRESSION_CRON = "0 2 * * *"  # 02:00: every built engine re-evaluated (standard profile)
WEEKLY_FULL_LIBRARY_CRON = "0 3 * * 0"  # Sunday 03:00: full profile plus every challenge suite
SCHEDULE_TIMEZONE = "UTC"

# --- Freshness -----------------------------------------------------------------------------------
DAY = timedelta(days=1)
WEEK = timedelta(days=7)
# A nightly run lands about a day after the previous night's; the slack covers a queue of cells
# behind the `cpu-heavy` pool and a slow TensorRT build. Warn: tonight's run is 2 hours later
# than last night's. Fail: a night was missed (or is 6 hours late).
NIGHTLY_WARN = DAY + timedelta(hours=2)
NIGHTLY_FAIL = DAY + timedelta(hours=6)
# The weekly full-library evaluation may run for hours (every frame, every challenge suite).
WEEKLY_FAIL = WEEK + timedelta(hours=12)

NIGHTLY_ENGINE_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=NIGHTLY_FAIL, warn_window=NIGHTLY_WARN)
"""`engine` and `production_engine`: an engine older than a day and a bit was not built against the
runtime stack installed now. The 01:00 UTC nightly rebuild (`engine_rebuild`) refreshes `engine`;
`production_engine` is rebuilt when the production bundle, the catalog, the calibration shard or
the golden data change, so its policy shows when the baseline every evaluation compares against
was built by an older stack than the candidate."""

EVALUATION_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=WEEKLY_FAIL, warn_window=NIGHTLY_FAIL)
"""`eval_report`: refreshed at least weekly by the Sunday 03:00 UTC full-library evaluation (FAIL
past a week and 12 hours), and every night by the 02:00 UTC regression evaluation (WARN once a
night's re-evaluation is missing)."""

GOLDEN_DATASET_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=30 * DAY, warn_window=WEEK)
"""`golden_dataset`: no schedule regenerates it; the `golden_data` job runs by hand (an identical
dataset is reused, and still materializes). WARN once a weekly full-library evaluation has scored
against a dataset nobody re-ran the job for in a week; FAIL after 30 days, so a datagen or
simulator upgrade does not go unexercised for longer than a month."""

__all__ = [
    "EVALUATION_FRESHNESS",
    "GOLDEN_DATASET_FRESHNESS",
    "NIGHTLY_ENGINE_FRESHNESS",
    "NIGHTLY_ENGINE_REBUILD_CRON",
    "NIGHTLY_REGRESSION_CRON",
    "SCHEDULE_TIMEZONE",
    "WEEKLY_FULL_LIBRARY_CRON",
]
