"""Registry entries without packs, for the store tests (content is arbitrary but well-formed)."""

from __future__ import annotations

import hashlib

from adas.registry.models import EntryBody, EntryPointers, Performance, Pointer, Verdict


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def pointer(key: str) -> Pointer:
    return Pointer(key=key, uri=f"file:///artifacts/{key}", sha256=sha(key), size=len(key))


def make_body(
    version: str = "1.0.0",
    device: str = "orin",
    precision: str = "int8",
    *,
    model_name: str = "adas-detector",
    ap: float = 0.5,
    green: bool = True,
) -> EntryBody:
    prefix = f"models/vehicle-detection-2d/{version}/{device}/{precision}"
    return EntryBody(
        model_name=model_name,
        task="vehicle-detection-2d",
        version=version,
        device=device,
        precision=precision,
        runtime="tensorrt",
        classes=["car", "truck", "motorcycle"],
        pointers=EntryPointers(
            pack_prefix=prefix,
            pack_uri=f"file:///artifacts/{prefix}",
            manifest=pointer(f"{prefix}/pack_manifest.json"),
            artifacts={"model.plan": pointer(f"{prefix}/model.plan")},
            git_sha="abcdef0",
            dataset_tag="sim-test",
            training_run_id="run-1",
            bundle_sha256=sha(version),
        ),
        performance=Performance(AP=ap),
        evaluation=Verdict(
            kind="evaluation",
            passed=green,
            version=version,
            device=device,
            precision=precision,
            rationale="ok",
        ),
        simulation=Verdict(
            kind="simulation",
            passed=green,
            version=version,
            device=device,
            precision=precision,
            rationale="ok",
        ),
    )
