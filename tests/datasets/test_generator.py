"""Generator tests on the real highway-env simulator (tiny size)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adas.config_errors import ConfigError
from adas.datasets.coco import CATEGORIES, GOLDEN_SPLITS, REPLAY_SPLIT, load_coco, split_file
from adas.datasets.config import DEFAULT_CONFIG_PATH, DatagenConfig, load_datagen_config
from adas.datasets.generator import generate_dataset
from adas.datasets.scene_plan import plan_scenes
from adas.datasets.simulator import Box, SceneSimulator

pytestmark = pytest.mark.slow
MANIFESTS = ("golden_train.json", "golden_val.json", "golden_test.json", "replay_sequences.json")


@pytest.fixture(scope="module")
def config() -> DatagenConfig:
    return load_datagen_config(DEFAULT_CONFIG_PATH)


# --------------------------------------------------------------------------------------------------
# Boxes sit on the rendered vehicles


@dataclass
class CleanFrame:
    scenario: str
    render_image: np.ndarray  # clean render, render size
    background: np.ndarray  # same view, vehicles removed
    image: np.ndarray  # clean saved-size frame
    boxes: list[Box]  # saved-frame xywh


@pytest.fixture(scope="module")
def clean_frames(config: DatagenConfig) -> list[CleanFrame]:
    out: list[CleanFrame] = []
    for i, scenario in enumerate(config.scenarios):
        for density in ("sparse", "dense"):
            sim = SceneSimulator(config, scenario, density, env_seed=4242 + i, rng=np.random.default_rng(i))
            try:
                sim.advance(2.0)
                for k in range(3):
                    if k:
                        sim.advance(1.5)
                    fr = sim.render()
                    out.append(
                        CleanFrame(scenario, fr.render_image, sim.render_background(), fr.image, fr.boxes)
                    )
            finally:
                sim.close()
    return out


def _alignment_pass_rate(
    frames: list[CleanFrame], config: DatagenConfig, shift: tuple[float, float]
) -> float:
    """Fraction of boxes (shifted by ``shift`` saved-frame px) that sit tightly on vehicle pixels.

    Checked at render resolution against a render of the same view without vehicles, so the
    vehicle mask is exact. A box passes when
      - vehicle pixels lie near its centre,
      - vehicle pixels reach within 3 px of each of its four edges (tight on every side),
      - at least one side just outside it (5 px out) is mostly road.
    """
    sx = config.frame.render_width / config.frame.width
    sy = config.frame.render_height / config.frame.height
    passed = total = 0
    for f in frames:
        mask = np.abs(f.render_image.astype(int) - f.background.astype(int)).max(axis=2) > 0
        h, w = mask.shape
        for b in f.boxes:
            x, y, bw, bh = b.bbox
            x0, y0 = (x + shift[0]) * sx, (y + shift[1]) * sy
            x1, y1 = x0 + bw * sx, y0 + bh * sy
            ix0, iy0 = max(round(x0), 0), max(round(y0), 0)
            ix1, iy1 = min(round(x1), w), min(round(y1), h)
            total += 1
            if ix1 - ix0 < 2 or iy1 - iy0 < 2:
                continue
            inside = mask[iy0:iy1, ix0:ix1]
            cx, cy = int((ix0 + ix1) / 2), int((iy0 + iy1) / 2)
            centre_hit = mask[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].any()
            t = 3
            edges_touch = (
                inside[:, :t].any() and inside[:, -t:].any() and inside[:t, :].any() and inside[-t:, :].any()
            )
            outside_road = []
            for side in (
                mask[iy0:iy1, ix0 - 5] if ix0 - 5 >= 0 else None,
                mask[iy0:iy1, ix1 + 4] if ix1 + 4 < w else None,
                mask[iy0 - 5, ix0:ix1] if iy0 - 5 >= 0 else None,
                mask[iy1 + 4, ix0:ix1] if iy1 + 4 < h else None,
            ):
                if side is not None:
                    outside_road.append(side.mean() < 0.3)
            if centre_hit and edges_touch and any(outside_road):
                passed += 1
    return passed / max(total, 1)


def test_boxes_sit_on_vehicles(clean_frames: list[CleanFrame], config: DatagenConfig) -> None:
    n_boxes = sum(len(f.boxes) for f in clean_frames)
    assert n_boxes >= 60, "too few boxes to judge alignment"
    assert {f.scenario for f in clean_frames if f.boxes} == set(config.scenarios)
    assert _alignment_pass_rate(clean_frames, config, (0.0, 0.0)) >= 0.95


@pytest.mark.parametrize(
    "shift", [(10.0, 0.0), (-10.0, 0.0), (0.0, 10.0), (0.0, -10.0), (4.0, 4.0), (2.0, 0.0), (0.0, 2.0)]
)
def test_alignment_check_catches_offset_boxes(
    clean_frames: list[CleanFrame], config: DatagenConfig, shift: tuple[float, float]
) -> None:
    # The check above must not be vacuous: the same boxes shifted a few pixels fail it.
    assert _alignment_pass_rate(clean_frames, config, shift) < 0.5


def test_box_centres_on_vehicles_in_saved_frame(
    clean_frames: list[CleanFrame], config: DatagenConfig
) -> None:
    # Same idea on the downscaled frame the dataset stores: guards the render -> saved scaling.
    hits = total = 0
    for f in clean_frames:
        bg = np.asarray(
            Image.fromarray(f.background).resize(
                (config.frame.width, config.frame.height), Image.Resampling.BILINEAR
            )
        )
        diff = np.abs(f.image.astype(int) - bg.astype(int)).max(axis=2) > 12
        for b in f.boxes:
            x, y, w, h = b.bbox
            cx, cy = int(x + w / 2), int(y + h / 2)
            total += 1
            hits += bool(diff[max(cy - 1, 0) : cy + 2, max(cx - 1, 0) : cx + 2].any())
    assert hits / total >= 0.95


def test_class_sizes_ordered(clean_frames: list[CleanFrame]) -> None:
    areas: dict[int, list[float]] = defaultdict(list)
    for f in clean_frames:
        for b in f.boxes:
            areas[b.category_id].append(b.bbox[2] * b.bbox[3])
    car, truck, moto = (float(np.mean(areas[c])) for c in (1, 2, 3))
    assert truck > 1.8 * car > 1.8 * 1.8 * moto, (truck, car, moto)


def test_ego_annotated_once_per_frame(clean_frames: list[CleanFrame]) -> None:
    for f in clean_frames:
        assert sum(b.is_ego for b in f.boxes) == 1


# --------------------------------------------------------------------------------------------------
# Dataset layout, splits and determinism (tiny size)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, config: DatagenConfig) -> Path:
    out = tmp_path_factory.mktemp("tiny_a")
    generate_dataset(out, config, size="tiny", workers=2)
    return out


def test_layout_and_contract(tiny_dir: Path, config: DatagenConfig) -> None:
    meta = json.loads((tiny_dir / "dataset.json").read_text())
    assert meta["tag"].startswith(f"sim-tiny-{config.seed}-") and len(meta["tag"].split("-")[-1]) == 8
    assert meta["frame_size"] == [96, 384]
    assert meta["categories"] == CATEGORIES
    assert meta["generator_version"] == "1"
    assert len(meta["config_hash"]) == 64
    tiny = config.sizes["tiny"]
    assert meta["counts"] == {
        "golden_train": tiny.golden_train,
        "golden_val": tiny.golden_val,
        "golden_test": tiny.golden_test,
        "replay": tiny.replay_sequences * tiny.replay_frames,
    }
    image_ids: set[int] = set()
    for split in (*GOLDEN_SPLITS, REPLAY_SPLIT):
        data = load_coco(split_file(tiny_dir, split))
        assert data["categories"] == CATEGORIES
        ids = [im["id"] for im in data["images"]]
        assert not image_ids & set(ids), "image ids must be unique across files"
        image_ids |= set(ids)
        ann_ids = [a["id"] for a in data["annotations"]]
        assert len(ann_ids) == len(set(ann_ids))
        for im in data["images"][:3]:
            assert im["split"] == split
            assert im["file_name"] == f"images/{split}/{im['scene_id']}_f{im['frame_index']:04d}.png"
            with Image.open(tiny_dir / im["file_name"]) as png:
                assert png.mode == "RGB" and png.size == (384, 96)
        for a in data["annotations"]:
            x, y, w, h = a["bbox"]
            assert x >= 0 and y >= 0 and x + w <= 384.01 and y + h <= 96.01
            assert w >= 2 and h >= 2 and a["iscrowd"] == 0 and a["area"] == pytest.approx(w * h, abs=0.01)


def test_scene_ids_never_shared_and_roundabout_held_out(tiny_dir: Path) -> None:
    scenes = {
        split: {im["scene_id"] for im in load_coco(split_file(tiny_dir, split))["images"]}
        for split in (*GOLDEN_SPLITS, REPLAY_SPLIT)
    }
    splits = list(scenes)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not scenes[a] & scenes[b], f"scene shared between {a} and {b}"
    for split in ("golden_train", "golden_val"):
        assert not any(s.startswith("roundabout-") for s in scenes[split])
        scenarios = {im["scenario"] for im in load_coco(split_file(tiny_dir, split))["images"]}
        assert "roundabout" not in scenarios
    assert any(s.startswith("roundabout-") for s in scenes["golden_test"])


def test_held_out_in_demo_plan(config: DatagenConfig) -> None:
    specs = plan_scenes(config, "demo")
    for split in ("golden_train", "golden_val"):
        assert all(s.scenario != "roundabout" for s in specs if s.split == split)
    test = [s for s in specs if s.split == "golden_test"]
    assert sum(s.n_frames for s in test if s.scenario == "roundabout") >= 60
    for cond in ("fog", "rain", "snow"):
        assert sum(s.n_frames for s in test if s.weather == cond) >= 60
    for light in ("night", "glare"):
        assert sum(s.n_frames for s in test if s.lighting == light) >= 60


def test_replay_sequences(tiny_dir: Path, config: DatagenConfig) -> None:
    data = load_coco(split_file(tiny_dir, REPLAY_SPLIT))
    images = {im["id"]: im for im in data["images"]}
    seqs = data["sequences"]
    assert len(seqs) == config.sizes["tiny"].replay_sequences
    anns: dict[int, list[dict]] = defaultdict(list)
    for a in data["annotations"]:
        anns[a["image_id"]].append(a)
    for seq in seqs:
        assert seq["fps"] == pytest.approx(5.0)
        frames = [images[i] for i in seq["image_ids"]]
        assert [f["frame_index"] for f in frames] == list(range(len(frames)))
        assert {f["scene_id"] for f in frames} == {seq["scene_id"]}
        ts = [f["timestamp_s"] for f in frames]
        assert np.allclose(np.diff(ts), 0.2)
        # Tracks persist: the ego keeps its track id, and most tracks span several frames.
        ego_tracks = {a["track_id"] for i in seq["image_ids"] for a in anns[i] if a["is_ego"]}
        assert len(ego_tracks) == 1
        lengths = defaultdict(int)
        for i in seq["image_ids"]:
            for a in anns[i]:
                lengths[a["track_id"]] += 1
        assert np.median(list(lengths.values())) >= 3


def test_deterministic(tiny_dir: Path, tmp_path: Path, config: DatagenConfig) -> None:
    # Same seed, different worker count (so different scheduling): byte-identical manifests and frames.
    same = tmp_path / "same"
    generate_dataset(same, config, size="tiny", workers=1)
    for name in MANIFESTS:
        assert (tiny_dir / name).read_bytes() == (same / name).read_bytes(), name
    pngs = sorted(p.relative_to(tiny_dir) for p in (tiny_dir / "images").rglob("*.png"))
    assert pngs == sorted(p.relative_to(same) for p in (same / "images").rglob("*.png"))
    for p in pngs[::5]:
        assert (tiny_dir / p).read_bytes() == (same / p).read_bytes(), p
    # Another seed gives another dataset.
    other = tmp_path / "other"
    generate_dataset(other, config.model_copy(update={"seed": config.seed + 1}), size="tiny", workers=1)
    for name in MANIFESTS:
        assert (tiny_dir / name).read_bytes() != (other / name).read_bytes(), name


# --------------------------------------------------------------------------------------------------
# Config validation


def _write_config(tmp_path: Path, mutate) -> Path:
    import yaml

    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    mutate(raw)
    p = tmp_path / "datagen.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    def leak(raw: dict) -> None:
        raw["split_scenarios"]["golden_train"]["roundabout"] = 0.1

    with pytest.raises(ConfigError, match=r"golden_train.*roundabout"):
        load_datagen_config(_write_config(tmp_path, leak))

    def bad_severity(raw: dict) -> None:
        raw["severities"] = [2, 7]

    with pytest.raises(ConfigError, match=r"severities\.1"):
        load_datagen_config(_write_config(tmp_path, bad_severity))

    def bad_class(raw: dict) -> None:
        raw["vehicle_classes"]["bus"] = raw["vehicle_classes"]["truck"]

    with pytest.raises(ConfigError, match=r"vehicle_classes\.bus"):
        load_datagen_config(_write_config(tmp_path, bad_class))

    def missing_seed(raw: dict) -> None:
        del raw["seed"]

    with pytest.raises(ConfigError, match=r"seed: Field required"):
        load_datagen_config(_write_config(tmp_path, missing_seed))


def test_unknown_size(config: DatagenConfig, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        generate_dataset(tmp_path, config, size="huge")
