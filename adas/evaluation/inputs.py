"""Reading what evaluation needs from the artifact store: manifests, frames, challenge suites.

A **challenge suite** is a folder with ``manifest.json`` (COCO: ``images`` with ``file_name``
relative to the folder, ``annotations``, ``categories`` named like the contract's classes; an
optional top-level ``"critical": true``) and its frames. It is copied into the store (hashed)
and evaluated as an extra slice ``challenge_<name>``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adas.datasets.slices import SliceCatalog, load_slices
from adas.evaluation.runner import load_frames
from adas.evaluation.slices import SliceSpec
from adas.intake.refs import SliceCatalogRef
from adas.intake.stored import DatasetFiles, fetch_file
from adas.storage import ArtifactStore, sha256_file

SUITE_MANIFEST = "manifest.json"
# Challenge suites are dropped under ``$ADAS_HOME/challenge_suites/<name>/`` and stored under
# ``challenge_suites/<name>/<digest>/`` in the artifact store.
CHALLENGE_SUITES_DIR = "challenge_suites"
_SUITE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
# Challenge images get ids far above any generated dataset's, so they never collide.
SUITE_ID_OFFSET = 10_000_000


class EvaluationInputError(ValueError):
    """An input of the evaluation is missing or invalid; the message names it."""


class ChallengeSuiteError(EvaluationInputError):
    """A challenge suite folder is malformed; the message names the folder and the problem."""


def challenge_suites_root(adas_home: Path) -> Path:
    """Where challenge suite folders are dropped: ``$ADAS_HOME/challenge_suites``."""
    return Path(adas_home) / CHALLENGE_SUITES_DIR


def load_slice_catalog(store: ArtifactStore, ref: SliceCatalogRef) -> SliceCatalog:
    """The slice catalog snapshot the slice_catalog asset stored (verified)."""
    return load_slices(fetch_file(store, ref.slices_file))


def load_split(
    files: DatasetFiles, coco: dict[str, Any], size_hw: tuple[int, int]
) -> tuple[list[int], np.ndarray, list[tuple[float, float]]]:
    """Frames of a manifest (each verified against the dataset's file index), model-input size."""
    names = [str(im["file_name"]) for im in coco["images"]]
    frames, scales = load_frames(files.read, names, size_hw)
    return [int(im["id"]) for im in coco["images"]], frames, scales


def suite_digest(folder: Path) -> str:
    """sha256 over the manifest and every frame it names (what identifies a suite version)."""
    folder = Path(folder)
    manifest = folder / SUITE_MANIFEST
    h = hashlib.sha256(manifest.read_bytes())
    try:
        body = json.loads(manifest.read_text())
        for im in body.get("images", []):
            p = folder / str(im.get("file_name", ""))
            if p.is_file():
                h.update(p.read_bytes())
    except (json.JSONDecodeError, AttributeError):
        pass
    return h.hexdigest()


def read_suite(folder: Path, categories: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Validate a suite folder; returns its manifest with categories mapped onto ``categories``."""
    folder = Path(folder)
    name = folder.name
    if not _SUITE_NAME.match(name):
        raise ChallengeSuiteError(f"{folder}: suite names are lowercase letters, digits, '-' and '_'")
    path = folder / SUITE_MANIFEST
    if not path.is_file():
        raise ChallengeSuiteError(f"{folder}: no {SUITE_MANIFEST}")
    try:
        body = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ChallengeSuiteError(f"{path}: not valid JSON: {exc}") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in body]
    if missing:
        raise ChallengeSuiteError(f"{path}: not a COCO manifest (missing {', '.join(missing)})")
    if not body["images"]:
        raise ChallengeSuiteError(f"{path}: the suite has no images")
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    remap: dict[int, int] = {}
    for c in body["categories"]:
        if str(c["name"]) not in by_name:
            raise ChallengeSuiteError(
                f"{path}: category {c['name']!r} is not one of the model's classes {sorted(by_name)}"
            )
        remap[int(c["id"])] = by_name[str(c["name"])]
    absent = [
        str(im.get("file_name"))
        for im in body["images"]
        if not (folder / str(im.get("file_name", ""))).is_file()
    ]
    if absent:
        raise ChallengeSuiteError(f"{folder}: frames named in the manifest are missing: {absent[:5]}")
    return {
        "name": name,
        "critical": bool(body.get("critical", False)),
        "description": str(body.get("description", "")),
        "images": body["images"],
        "annotations": [{**a, "category_id": remap[int(a["category_id"])]} for a in body["annotations"]],
    }


@dataclass
class MergedSuite:
    slice: SliceSpec
    image_ids: list[int]
    frames: np.ndarray
    scales: list[tuple[float, float]]


def merge_suite(
    gt: dict[str, Any],
    suite: dict[str, Any],
    read: Any,
    size_hw: tuple[int, int],
    offset: int,
) -> MergedSuite:
    """Append a suite's images and boxes to ``gt`` (ids shifted by ``offset``); load its frames
    with ``read(file_name) -> bytes``."""
    id_map = {int(im["id"]): offset + k for k, im in enumerate(suite["images"])}
    next_ann = max((int(a.get("id", 0)) for a in gt["annotations"]), default=0) + 1
    for im in suite["images"]:
        gt["images"].append({**im, "id": id_map[int(im["id"])], "challenge_suite": suite["name"]})
    for k, a in enumerate(suite["annotations"]):
        if int(a["image_id"]) not in id_map:
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        gt["annotations"].append(
            {
                "id": next_ann + k,
                "image_id": id_map[int(a["image_id"])],
                "category_id": int(a["category_id"]),
                "bbox": [x, y, w, h],
                "area": float(a.get("area", w * h)),
                "iscrowd": int(a.get("iscrowd", 0)),
            }
        )
    frames, scales = load_frames(read, [str(im["file_name"]) for im in suite["images"]], size_hw)
    ids = [id_map[int(im["id"])] for im in suite["images"]]
    spec = SliceSpec(
        f"challenge_{suite['name']}", ids, suite["critical"], suite["description"] or "challenge suite"
    )
    return MergedSuite(spec, ids, frames, scales)


def list_suites(root: Path) -> list[Path]:
    """Suite folders under ``root`` that have a manifest (written last, so the folder is complete)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / SUITE_MANIFEST).is_file())


def stage_challenge_suites(
    store: ArtifactStore,
    root: Path,
    names: Sequence[str],
    gt: dict[str, Any],
    size_hw: tuple[int, int],
    log: Callable[[str], None] = lambda _s: None,
) -> tuple[list[MergedSuite], list[str]]:
    """Validate each named suite under ``root``, copy it into the store (once per version), and
    merge it into ``gt``; returns the merged suites and their ``name@digest`` labels."""
    merged, used = [], []
    for k, name in enumerate(names):
        folder = Path(root) / name
        try:
            suite = read_suite(folder, gt["categories"])
        except ChallengeSuiteError as exc:
            raise ChallengeSuiteError(f"challenge suite {name!r}: {exc}") from exc
        digest = suite_digest(folder)
        prefix = f"{CHALLENGE_SUITES_DIR}/{name}/{digest[:12]}"
        if not store.exists(f"{prefix}/{SUITE_MANIFEST}"):
            store.put_tree(prefix, folder)
        # The suite is the dropped folder: its stored copy is read against the folder's hashes,
        # so a copy changed in the store (sidecars included) is refused, not evaluated.
        pins = {str(im["file_name"]): sha256_file(folder / str(im["file_name"]))[0] for im in suite["images"]}
        m = merge_suite(
            gt,
            suite,
            lambda f, p=prefix, pinned=pins: store.get_bytes(f"{p}/{f}", expected_sha256=pinned[f]),
            size_hw,
            SUITE_ID_OFFSET * (k + 1),
        )
        log(f"challenge suite {name}: {len(m.image_ids)} frames (stored at {prefix})")
        merged.append(m)
        used.append(f"{name}@{digest[:12]}")
    return merged, used
