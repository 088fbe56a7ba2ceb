"""Watch the inbox and take in each new candidate bundle exactly once."""

import json

import dagster as dg

from adas.intake.bundle import BundleRejected
from adas.intake.candidates import screen_bundle
from adas_assets.automation import default_sensor_status
from jobs.intake import candidate_intake_job
from resources.artifact_store import ArtifactStoreParam
from resources.inbox import Inbox, cleanup_local_copy

# Remember this many requested bundle hashes; older ones are also deduplicated by run_key.
_CURSOR_LIMIT = 500


@dg.sensor(
    job=candidate_intake_job,
    minimum_interval_seconds=15,
    default_status=default_sensor_status(),
    description="Validates bundles dropped into the inbox; good ones launch intake, bad ones move to rejected/.",
)
def candidate_inbox_sensor(
    context: dg.SensorEvaluationContext, inbox: Inbox, artifact_store: ArtifactStoreParam
) -> dg.SensorResult | dg.SkipReason:
    requested: list[str] = json.loads(context.cursor) if context.cursor else []
    run_requests: list[dg.RunRequest] = []
    notes: list[str] = []
    for item in inbox.pending():
        local = inbox.local_copy(item)
        try:
            screened = screen_bundle(artifact_store, local)
        except BundleRejected as exc:
            where = inbox.reject(item, exc.field, exc.reason)
            notes.append(f"rejected {item.name}: {exc} (moved to {where})")
            context.log.warning(notes[-1])
            continue
        finally:
            cleanup_local_copy(inbox, item, local)
        bundle = screened.bundle
        sha = bundle.digest.sha256
        label = f"{bundle.contract.version}-{sha[:12]}"
        if screened.already_stored:
            where = inbox.archive(item, f"duplicate-{label}")
            notes.append(f"{item.name} is bundle {sha[:12]}, already taken in; moved to {where}, no new run")
            context.log.info(notes[-1])
            continue
        if sha in requested:
            notes.append(f"{item.name} ({sha[:12]}) is waiting for its intake run")
            continue
        requested.append(sha)
        run_requests.append(
            dg.RunRequest(
                run_key=sha,
                run_config=dg.RunConfig(
                    ops={
                        "candidate_checkpoint": {
                            "config": {"bundle_name": item.name, "bundle_location": item.location}
                        }
                    }
                ),
                tags={"adas/bundle_sha256": sha, "adas/candidate_version": bundle.contract.version},
            )
        )
        context.log.info(f"requesting intake of {item.name}: {bundle.contract.model_name} {label}")
    cursor = json.dumps(requested[-_CURSOR_LIMIT:])
    if run_requests:
        return dg.SensorResult(run_requests=run_requests, cursor=cursor)
    context.update_cursor(cursor)
    return dg.SkipReason("; ".join(notes) if notes else f"no new bundles in {inbox.location()}")
