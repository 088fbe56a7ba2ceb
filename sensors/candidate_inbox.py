"""Watch the inbox and request one intake run per bundle dropped.

The sensor only lists and schedules. It never loads a model, never moves, deletes or writes a
bundle (a tick or a ``dagster sensor preview`` leaves the inbox byte-identical): validation,
the move to ``rejected/`` with the reason, or to ``accepted/``, all happen inside the intake
run, which records them. A bundle that cannot even be hashed still gets its run, whose failure
names why; one bad bundle never stops the tick for the others.
"""

import json

import dagster as dg

from adas.intake.bundle import digest_bundle, read_contract
from adas.intake.files import BundleRejected
from adas_assets.automation import default_sensor_status
from jobs.intake import candidate_intake_job
from resources.inbox import Inbox, InboxItem, cleanup_local_copy

# Remember this many requested drops; older ones are also deduplicated by run_key.
_CURSOR_LIMIT = 500


def _drop_key(inbox: Inbox, item: InboxItem) -> tuple[str, dict[str, str]]:
    """The identity of this drop and the run's tags (bundle sha256 and version when readable): a
    re-drop of the same bundle is a new drop (the run files it as a duplicate), a bundle still
    waiting for its run is not. Reading here is hashing and parsing text, never loading a model."""
    local = inbox.local_copy(item)
    tags = {"adas/bundle": item.name}
    sha = ""
    try:
        sha = digest_bundle(local).sha256
        tags["adas/bundle_sha256"] = sha
        tags["adas/candidate_version"] = read_contract(local).version
    except Exception as exc:  # any per-bundle failure: its run will name it
        tags["adas/unreadable"] = (str(exc) if isinstance(exc, BundleRejected) else type(exc).__name__)[:200]
    finally:
        cleanup_local_copy(inbox, item, local)
    return f"{item.name}:{inbox.drop_stamp(item)}:{sha[:16]}", tags


@dg.sensor(
    job=candidate_intake_job,
    # A listing of one prefix: cheap enough to look every 5 s, and a drop waits at most that.
    minimum_interval_seconds=5,
    default_status=default_sensor_status(),
    description="Lists bundles dropped into the inbox and requests one intake run per drop (the run validates, "
    "stores, and moves the bundle to accepted/ or rejected/ with the reason).",
)
def candidate_inbox_sensor(
    context: dg.SensorEvaluationContext, inbox: Inbox
) -> dg.SensorResult | dg.SkipReason:
    requested: list[str] = json.loads(context.cursor) if context.cursor else []
    run_requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for item in inbox.pending():
        try:
            key, tags = _drop_key(inbox, item)
        except Exception as exc:  # the inbox itself failed for this item: skip it this tick
            notes.append(
                f"{item.name}: could not be listed ({type(exc).__name__}: {exc}); retrying next tick"
            )
            context.log.warning(notes[-1])
            continue
        if key in requested:
            notes.append(f"{item.name} is waiting for its intake run")
            continue
        requested.append(key)
        run_requests.append(
            dg.RunRequest(
                run_key=key,
                run_config=dg.RunConfig(
                    ops={
                        "candidate_checkpoint": {
                            "config": {"bundle_name": item.name, "bundle_location": item.location}
                        }
                    }
                ),
                tags=tags,
            )
        )
        context.log.info(
            f"requesting intake of {item.name} ({tags.get('adas/bundle_sha256', 'unreadable')[:12]})"
        )
    cursor = json.dumps(requested[-_CURSOR_LIMIT:])
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, cursor=cursor)
    context.update_cursor(cursor)
    return dg.SkipReason("; ".join(notes) if notes else f"no new bundles in {inbox.location()}")
