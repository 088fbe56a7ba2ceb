"""The golden-data assets on a real (tiny) simulated dataset, materialized through Dagster."""

import json
from pathlib import Path

import dagster as dg
import pytest

from adas.intake.calibration import balanced_shard
from adas.settings import AdasHome
from adas.storage import LocalArtifactStore
from adas_assets.intake import assets as intake
from resources import build_resources

DATA_ASSETS = [
    intake.golden_dataset,
    intake.slice_catalog,
    intake.calibration_shard,
    intake.replay_log_bundles,
]


@pytest.mark.slow
def test_golden_data_assets_materialize_and_reuse(adas_home: Path) -> None:
    resources = build_resources("local", AdasHome(adas_home))
    run_config = dg.RunConfig(
        ops={
            "golden_dataset": {"config": {"size": "tiny", "workers": 1}},
            # The tiny split cannot hold every condition; balancing itself is unit-tested below.
            "calibration_shard": {"config": {"size": 8, "strata": ["all"]}},
        }
    )
    with dg.instance_for_test() as instance:
        result = dg.materialize(DATA_ASSETS, resources=resources, run_config=run_config, instance=instance)
        assert result.success
        mats = {m.asset_key.path[-1]: m for m in result.get_asset_materialization_events()}
        dataset = mats["golden_dataset"].materialization
        assert dataset.metadata["reused"].value is False
        tag = dataset.metadata["dataset_tag"].value
        assert tag.startswith("sim-")
        shard = mats["calibration_shard"].materialization
        assert shard.metadata["frames"].value == 8
        # Every stored file verifies against its recorded hash.
        store = LocalArtifactStore(resources["artifact_store"].root)
        keys = store.list_keys(f"datasets/{tag}/")
        assert any(k.endswith(".png") for k in keys) and any(k.endswith("golden_test.json") for k in keys)
        for key in keys[:50]:
            store.fetch(key)
        body = json.loads(store.get_bytes(next(k for k in keys if "/calibration/" in k)))
        val = json.loads(store.get_bytes(f"datasets/{tag}/golden_val.json"))
        assert set(body["image_ids"]) <= {img["id"] for img in val["images"]}

        again = dg.materialize(
            [intake.golden_dataset],
            resources=resources,
            run_config=dg.RunConfig(ops={"golden_dataset": {"config": {"size": "tiny", "workers": 1}}}),
            instance=instance,
        )
        (mat,) = again.get_asset_materialization_events()
        assert mat.materialization.metadata["reused"].value is True


def test_calibration_shard_is_balanced_and_refuses_missing_strata() -> None:
    from adas.datasets.slices import load_slices

    conditions = [("clear", "day")] * 40 + [("fog", "day")] * 5 + [("clear", "night")] * 5
    coco = {
        "images": [
            {"id": i, "scenario": "highway", "density": "sparse", "weather": w, "lighting": light}
            for i, (w, light) in enumerate(conditions)
        ]
    }
    catalog = load_slices()
    ids, per = balanced_shard(coco, catalog, 12, ["clear_day", "fog", "night"], seed=1)
    assert len(ids) == 12 and len(set(ids)) == 12
    assert per == {"clear_day": 4, "fog": 4, "night": 4}
    with pytest.raises(ValueError, match="stratum 'snow' has no image"):
        balanced_shard(coco, catalog, 12, ["clear_day", "snow"])
