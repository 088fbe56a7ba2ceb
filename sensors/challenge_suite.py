"""Re-evaluate every built engine when a challenge suite appears or changes."""

import json

import dagster as dg

from adas.evaluation.inputs import challenge_suites_root, list_suites, suite_digest
from adas.settings import AdasHome
from adas_assets.automation import default_sensor_status
from jobs.evaluation import eval_run_config, evaluated_cells, evaluation_job


@dg.sensor(
    job=evaluation_job,
    minimum_interval_seconds=60,
    default_status=default_sensor_status(),
    description="Re-evaluates every built engine when a challenge suite (frames + manifest.json) "
    "appears or changes under $ADAS_HOME/challenge_suites/.",
)
def challenge_suite_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult | dg.SkipReason:
    root = challenge_suites_root(AdasHome.from_env().root)
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    current = {p.name: suite_digest(p) for p in list_suites(root)}
    new = {name: d for name, d in current.items() if seen.get(name) != d}
    if not new:
        return dg.SkipReason(f"no new or changed challenge suite under {root}")
    cells = evaluated_cells(context.instance)
    if not cells:
        return dg.SkipReason(
            f"challenge suite(s) {', '.join(sorted(new))} found, but no engine is built yet; "
            "they will be evaluated with the first engines"
        )
    requests = [
        dg.RunRequest(
            run_key=f"challenge-{name}-{digest[:12]}-{cell}",
            partition_key=cell,
            run_config=eval_run_config("standard", [name]),
            tags={"adas/challenge_suite": name, "adas/trigger": "challenge_suite"},
        )
        for name, digest in sorted(new.items())
        for cell in cells
    ]
    return dg.SensorResult(run_requests=requests, cursor=json.dumps({**seen, **new}, sort_keys=True))
