"""The triggers of re-evaluation: the challenge-suite sensor (sensors/challenge_suite.py) and the
nightly and weekly schedules (jobs/evaluation.py), against a temporary instance."""

import json
from pathlib import Path

import dagster as dg

from adas.storage import LocalArtifactStore
from adas_assets.evaluation import assets as ev
from jobs.evaluation import (
    evaluation_job,
    evaluation_schedules,
    nightly_regression_evaluation,
    weekly_full_library_evaluation,
)
from resources.io_manager import ArtifactJsonIOManager
from sensors.challenge_suite import challenge_suite_sensor

from .stubs import UPSTREAM, write_challenge_suite


def test_challenge_suite_sensor_and_schedules(tmp_path: Path, adas_home: Path) -> None:
    defs = dg.Definitions(
        assets=[*UPSTREAM, *ev.evaluation_assets],
        sensors=[challenge_suite_sensor],
        schedules=evaluation_schedules,
        jobs=[evaluation_job],
        resources={
            "artifact_store": (store := LocalArtifactStore(root=str(adas_home / "artifacts"))),
            "io_manager": ArtifactJsonIOManager(store=store),
        },
    )
    with dg.instance_for_test() as instance:
        ctx = dg.build_sensor_context(instance=instance)
        assert "no new or changed challenge suite" in challenge_suite_sensor(ctx).skip_message
        write_challenge_suite(adas_home)
        skip = challenge_suite_sensor(dg.build_sensor_context(instance=instance))
        assert "no engine is built yet" in skip.skip_message
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key="engine", partition="x86-cpu|fp32")
        )
        result = challenge_suite_sensor(dg.build_sensor_context(instance=instance))
        assert isinstance(result, dg.SensorResult)
        (req,) = result.run_requests
        assert req.partition_key == "x86-cpu|fp32"
        assert req.run_config["ops"]["eval_report"]["config"]["challenge_suites"] == ["tunnels"]
        again = challenge_suite_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert isinstance(again, dg.SkipReason)
        (adas_home / "challenge_suites" / "tunnels" / "manifest.json").write_text(
            json.dumps({"images": [], "annotations": [], "categories": [], "changed": True})
        )
        changed = challenge_suite_sensor(dg.build_sensor_context(instance=instance, cursor=result.cursor))
        assert isinstance(changed, dg.SensorResult) and len(changed.run_requests) == 1

        nightly = nightly_regression_evaluation(dg.build_schedule_context(instance=instance))
        weekly = weekly_full_library_evaluation(dg.build_schedule_context(instance=instance))
        assert [r.partition_key for r in nightly] == ["x86-cpu|fp32"]
        assert nightly[0].run_config["ops"]["eval_report"]["config"] == {
            "profile": "standard",
            "challenge_suites": [],
        }
        assert weekly[0].run_config["ops"]["eval_report"]["config"] == {
            "profile": "full",
            "challenge_suites": ["tunnels"],
        }
    assert nightly_regression_evaluation.cron_schedule == "0 2 * * *"
    assert defs.resolve_job_def("evaluation_job") is not None
