"""config/slices.yaml and the slice catalog."""

from __future__ import annotations

from pathlib import Path

import pytest

from adas.config_errors import ConfigError
from adas.datasets.coco import image_tags
from adas.datasets.slices import DEFAULT_SLICES_PATH, SliceCatalog, load_slices

REQUIRED = {
    "all",
    "clear_day",
    "night",
    "fog",
    "rain",
    "snow",
    "glare",
    "scenario_highway",
    "scenario_merge",
    "scenario_intersection",
    "scenario_roundabout",
    "density_sparse",
    "density_dense",
}


def _img(i: int, **tags: str) -> dict:
    base = {"scenario": "highway", "density": "sparse", "weather": "clear", "lighting": "day"}
    return {"id": i, "file_name": f"images/golden_test/x_f{i:04d}.png", **base, **tags}


@pytest.fixture(scope="module")
def catalog() -> SliceCatalog:
    return load_slices(DEFAULT_SLICES_PATH)


def test_repo_slices_load(catalog: SliceCatalog) -> None:
    assert catalog.version == 1
    assert set(catalog.names) >= REQUIRED
    assert set(catalog.critical) == {"night", "fog", "rain", "snow", "density_dense"}


def test_slices_for(catalog: SliceCatalog) -> None:
    assert catalog.slices_for(_img(1)) == ["all", "clear_day", "scenario_highway", "density_sparse"]
    rainy_night = catalog.slices_for(
        _img(2, weather="rain", lighting="night", scenario="roundabout", density="dense")
    )
    assert set(rainy_night) == {"all", "night", "rain", "scenario_roundabout", "density_dense"}
    assert "clear_day" not in catalog.slices_for(_img(3, lighting="glare"))


def test_image_ids_and_counts(catalog: SliceCatalog) -> None:
    coco = {
        "images": [
            _img(1),
            _img(2, weather="fog"),
            _img(3, weather="fog", lighting="night"),
            _img(4, scenario="merge"),
        ],
        "annotations": [],
        "categories": [],
    }
    assert catalog.image_ids(coco, "fog") == [2, 3]
    assert catalog.image_ids(coco, "all") == [1, 2, 3, 4]
    assert catalog.image_ids(coco, "clear_day") == [1, 4]
    counts = catalog.counts(coco)
    assert counts["night"] == 1 and counts["scenario_merge"] == 1 and counts["snow"] == 0
    with pytest.raises(KeyError, match="unknown slice 'hail'"):
        catalog.image_ids(coco, "hail")


def test_image_tags_only_slice_tags() -> None:
    assert image_tags(_img(5, weather="snow")) == {
        "scenario": "highway",
        "density": "sparse",
        "weather": "snow",
        "lighting": "day",
    }


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "slices.yaml"
    p.write_text(text)
    return p


def test_unknown_tag_names_slice_and_tag(tmp_path: Path) -> None:
    p = _write(tmp_path, "version: 1\nslices:\n  - name: foggy\n    where: {weathr: [fog]}\n")
    with pytest.raises(ConfigError) as exc:
        load_slices(p)
    msg = str(exc.value)
    assert str(p) in msg and "slices.0" in msg and "'foggy'" in msg and "'weathr'" in msg


def test_unknown_value_rejected(tmp_path: Path) -> None:
    p = _write(tmp_path, "version: 1\nslices:\n  - name: foggy\n    where: {weather: [fogg]}\n")
    with pytest.raises(ConfigError, match=r"slice 'foggy'.*'fogg'.*weather"):
        load_slices(p)


def test_missing_name_names_the_field(tmp_path: Path) -> None:
    p = _write(tmp_path, "version: 1\nslices:\n  - where: {weather: [fog]}\n    critical: true\n")
    with pytest.raises(ConfigError, match=r"slices\.0\.name: Field required"):
        load_slices(p)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("version: 2\nslices:\n  - name: all\n", r"version"),
        ("version: 1\nslices:\n  - name: all\n  - name: all\n", r"duplicate slice name 'all'"),
        ("version: 1\nslices:\n  - name: all\n    critcal: true\n", r"slices\.0\.critcal"),
        ("version: 1\nslices: []\n", r"slices"),
        ("- just a list\n", r"mapping"),
    ],
)
def test_other_bad_files(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        load_slices(_write(tmp_path, text))
