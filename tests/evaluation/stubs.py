"""Stand-ins for what the evaluation assets read: upstream asset specs, stored files, engine
descriptors and a challenge-suite folder."""

import json
from pathlib import Path

import dagster as dg
import numpy as np
from PIL import Image

from adas.intake.contract import Contract, Lineage, Normalization
from adas.intake.refs import CandidateRef, StoredFile
from adas.packaging.refs import EngineRef
from adas.storage import LocalArtifactStore
from adas_assets.partitions import TARGET_PARTITIONS

NORMALIZATION = Normalization(scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
# The evaluation assets' upstream assets, as specs (nothing materializes them in these tests).
UPSTREAM = [
    dg.AssetSpec("engine", partitions_def=TARGET_PARTITIONS),
    dg.AssetSpec("production_engine", partitions_def=TARGET_PARTITIONS),
    dg.AssetSpec("golden_dataset"),
    dg.AssetSpec("slice_catalog"),
    dg.AssetSpec("replay_log_bundles"),
    dg.AssetSpec("target_catalog"),
]


def stored(store: LocalArtifactStore, key: str) -> StoredFile:
    """The descriptor of a file already in the store."""
    return StoredFile(
        key=key, uri=store.uri(key), sha256=store.recorded_sha256(key), size=len(store.get_bytes(key))
    )


def engine_ref(
    store: LocalArtifactStore, contract: Contract, model: Path, device: str, precision: str
) -> EngineRef:
    """``model`` stored as the candidate bundle's model and as the cell's packaged engine."""
    c = contract
    model_key = f"candidates/{c.task}/{c.version}/model.onnx"
    store.put_file(model_key, model)
    candidate = CandidateRef(
        bundle_sha256=store.recorded_sha256(model_key),
        prefix=f"candidates/{c.task}/{c.version}",
        files={"model.onnx": stored(store, model_key)},
        contract=c,
        lineage=Lineage(training_run_id="test", dataset_tag="sim-synthetic", git_sha="abcdef0"),
        parameter_count=1,
        received_at="2026-01-01T00:00:00+00:00",
        source="test",
    )
    key = f"models/{c.task}/{c.version}/{device}/{precision}/model.onnx"
    store.put_file(key, model)
    return EngineRef(
        device=device,
        precision=precision,
        runtime="onnxruntime",
        candidate=candidate,
        engine=stored(store, key),
    )


def write_challenge_suite(home: Path) -> None:
    """``$ADAS_HOME/challenge_suites/tunnels``: three dark frames with one car each, critical."""
    folder = home / "challenge_suites" / "tunnels"
    (folder / "frames").mkdir(parents=True)
    images, anns = [], []
    for k in range(3):
        img = np.full((96, 384, 3), 40, np.uint8)
        img[40:47, 100 + 20 * k : 116 + 20 * k] = 230
        Image.fromarray(img).save(folder / "frames" / f"{k}.png")
        images.append({"id": k + 1, "file_name": f"frames/{k}.png", "width": 384, "height": 96})
        anns.append({"id": k + 1, "image_id": k + 1, "category_id": 7, "bbox": [100 + 20 * k, 40, 16, 7]})
    manifest = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": 7, "name": "car"}],
        "critical": True,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
