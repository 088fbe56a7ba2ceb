"""Declarative automation of the evaluation assets: evaluation follows a new engine on supported
cells without waiting for a production baseline, only after the dataset checks passed; the
quantization study follows any evaluation of the device."""

from pathlib import Path

import dagster as dg

from adas.storage import LocalArtifactStore
from adas_assets.evaluation import assets as ev
from adas_assets.evaluation import checks as ev_checks

from .stubs import UPSTREAM


def _requested(result: dg.EvaluateAutomationConditionsResult) -> dict[str, list[str]]:
    return {
        r.key.to_user_string(): sorted(r.true_subset.expensively_compute_partition_keys())
        if r.true_subset.size
        else []
        for r in result.results
    }


def test_evaluation_follows_engines_not_production_and_waits_for_dataset_checks(tmp_path: Path) -> None:
    defs = dg.Definitions(
        assets=[*UPSTREAM, *ev.evaluation_assets],
        asset_checks=ev_checks.evaluation_checks,
        resources={"artifact_store": LocalArtifactStore(root=str(tmp_path))},
    )
    with dg.instance_for_test() as instance:
        for key in ("golden_dataset", "slice_catalog", "replay_log_bundles", "target_catalog"):
            instance.report_runless_asset_event(dg.AssetMaterialization(key))
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        for pk in ("x86-cpu|fp32", "x86-cpu|int8"):
            instance.report_runless_asset_event(dg.AssetMaterialization("engine", partition=pk))
        # The dataset's blocking integrity checks have not run: nothing is evaluated yet.
        blocked = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
        assert _requested(blocked)["eval_report"] == []
        for name in ev_checks.INTEGRITY_CHECKS:
            instance.report_runless_asset_event(
                dg.AssetCheckEvaluation(asset_key=dg.AssetKey("golden_dataset"), check_name=name, passed=True)
            )
        for pk in ("x86-cpu|fp32", "x86-cpu|int8"):
            instance.report_runless_asset_event(dg.AssetMaterialization("engine", partition=pk))
        ready = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=blocked.cursor)
        # No production_engine anywhere: evaluation runs anyway, on the cells with an engine.
        assert _requested(ready)["eval_report"] == ["x86-cpu|fp32", "x86-cpu|int8"]
        assert _requested(ready)["regression_gate"] == ["x86-cpu|fp32", "x86-cpu|int8"]
        instance.report_runless_asset_event(dg.AssetMaterialization("eval_report", partition="x86-cpu|fp32"))
        after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=ready.cursor)
        # One precision evaluated: the device's supported cells compare (fp16 is not offered on x86).
        assert _requested(after)["quantization_sensitivity"] == ["x86-cpu|fp32", "x86-cpu|int8"]
