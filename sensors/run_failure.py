"""When a run fails, write a blocking report people (and the data-mining loop) can act on."""

import json
from datetime import UTC, datetime

import dagster as dg

from adas_assets.automation import default_sensor_status
from resources.artifact_store import ArtifactStoreParam


def failure_report(run: dg.DagsterRun, message: str, failed_steps: list[str]) -> dict:
    return {
        "run_id": run.run_id,
        "job": run.job_name,
        "partition": run.tags.get("dagster/partition"),
        "asset_selection": sorted(k.to_user_string() for k in (run.asset_selection or [])),
        "failed_steps": failed_steps,
        "error": message,
        "blocking": True,
        "reported_at": datetime.now(UTC).isoformat(),
    }


@dg.run_failure_sensor(
    default_status=default_sensor_status(),
    description="Writes reports/run-failures/<run id>.json + .md for every failed run (blocking report).",
)
def run_failure_report(context: dg.RunFailureSensorContext, artifact_store: ArtifactStoreParam) -> None:
    run = context.dagster_run
    failed_steps = sorted(
        s.step_key
        for s in context.instance.get_run_step_stats(run.run_id)
        if s.status and s.status.value == "FAILURE"
    )
    message = context.failure_event.message or "run failed"
    report = failure_report(run, message, failed_steps)
    key = f"reports/run-failures/{run.run_id}"
    artifact_store.put_bytes(f"{key}.json", json.dumps(report, indent=2).encode())
    md = (
        f"# Blocking: run {run.run_id[:8]} of `{run.job_name}` failed\n\n"
        f"- partition: {report['partition'] or '(none)'}\n- assets: {', '.join(report['asset_selection']) or '(job)'}\n"
        f"- failed steps: {', '.join(failed_steps) or '(none recorded)'}\n\n```\n{message}\n```\n"
    )
    stored = artifact_store.put_bytes(f"{key}.md", md.encode())
    context.log.info(f"blocking report for run {run.run_id[:8]}: {stored.uri}")
