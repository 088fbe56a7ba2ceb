"""Weather / lighting / sensor-noise transforms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from adas.datasets.coco import LIGHTINGS, WEATHERS
from adas.datasets.weather import apply_weather, gaussian_blur, smooth_field

CONDITIONS = list(itertools.product(WEATHERS, LIGHTINGS))


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    """A synthetic top-down frame: grey road, white lane lines, coloured vehicles of three sizes."""
    rng = np.random.default_rng(0)
    img = np.full((96, 384, 3), 100, dtype=np.uint8)
    for y in (20, 34, 48, 62, 76):
        img[y : y + 1, ::6] = 255
    for _ in range(14):
        w, h = [(16, 7), (34, 9), (8, 3)][int(rng.integers(3))]
        y = int(rng.integers(0, 96 - h))
        x = int(rng.integers(0, 384 - w))
        img[y : y + h, x : x + w] = rng.integers(0, 256, size=3)
    return img


@pytest.mark.parametrize(("weather", "lighting"), CONDITIONS)
def test_deterministic_shape_dtype_and_changes_image(frame: np.ndarray, weather: str, lighting: str) -> None:
    before = frame.copy()
    a = apply_weather(frame, weather, lighting, np.random.default_rng(7), severity=3)
    b = apply_weather(frame, weather, lighting, np.random.default_rng(7), severity=3)
    c = apply_weather(frame, weather, lighting, np.random.default_rng(8), severity=3)
    assert a.dtype == np.uint8 and a.shape == frame.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.abs(a.astype(int) - frame.astype(int)).mean() > 1.0  # sensor noise alone already changes it
    assert np.array_equal(frame, before), "the input frame must not be modified"


@pytest.mark.parametrize(("weather", "lighting"), [c for c in CONDITIONS if c != ("clear", "day")])
def test_adverse_conditions_differ_from_clean(frame: np.ndarray, weather: str, lighting: str) -> None:
    clean = apply_weather(frame, "clear", "day", np.random.default_rng(3), severity=3).astype(int)
    adverse = apply_weather(frame, weather, lighting, np.random.default_rng(3), severity=3).astype(int)
    assert np.abs(adverse - clean).mean() > 8.0


def test_fog_contrast_falls_with_severity(frame: np.ndarray) -> None:
    stds = [
        float(apply_weather(frame, "fog", "day", np.random.default_rng(1), severity=s).std())
        for s in range(1, 6)
    ]
    assert all(a > b for a, b in itertools.pairwise(stds)), stds
    assert stds[-1] < 0.3 * float(frame.std())


def test_night_is_dark_and_blue(frame: np.ndarray) -> None:
    night = apply_weather(frame, "clear", "night", np.random.default_rng(1), severity=3).astype(float)
    assert night.mean() < 0.5 * frame.mean()
    assert night[..., 2].mean() > night[..., 0].mean()


def test_glare_saturates_some_of_the_frame(frame: np.ndarray) -> None:
    g = apply_weather(frame, "clear", "glare", np.random.default_rng(1), severity=4)
    saturated = (g.min(axis=2) >= 250).mean()
    assert 0.02 < saturated < 0.6


def test_snow_brightens_rain_darkens(frame: np.ndarray) -> None:
    clean = apply_weather(frame, "clear", "day", np.random.default_rng(2), severity=3).mean()
    assert apply_weather(frame, "snow", "day", np.random.default_rng(2), severity=3).mean() > clean + 10
    assert apply_weather(frame, "rain", "day", np.random.default_rng(2), severity=4).mean() < clean


def test_layout_rng_keeps_static_parts_still(frame: np.ndarray) -> None:
    # Same layout seed, different frame seeds: glare spots stay where they were.
    a = apply_weather(
        frame, "clear", "glare", np.random.default_rng(1), 4, layout_rng=np.random.default_rng(9)
    )
    b = apply_weather(
        frame, "clear", "glare", np.random.default_rng(2), 4, layout_rng=np.random.default_rng(9)
    )
    sat_a, sat_b = a.min(axis=2) >= 250, b.min(axis=2) >= 250
    assert (sat_a & sat_b).sum() > 0.8 * min(sat_a.sum(), sat_b.sum())


@pytest.mark.parametrize("severity", [0, 6, 2.5])
def test_rejects_bad_severity(frame: np.ndarray, severity: float) -> None:
    with pytest.raises(ValueError, match="severity"):
        apply_weather(frame, "fog", "day", np.random.default_rng(0), severity=severity)  # type: ignore[arg-type]


def test_rejects_bad_inputs(frame: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="weather"):
        apply_weather(frame, "hail", "day", rng)
    with pytest.raises(ValueError, match="lighting"):
        apply_weather(frame, "clear", "dusk", rng)
    with pytest.raises(ValueError, match="uint8"):
        apply_weather(frame.astype(np.float32), "clear", "day", rng)


def test_helpers() -> None:
    f = smooth_field(np.random.default_rng(0), 96, 384, (3, 8))
    assert f.shape == (96, 384) and f.min() >= 0.0 and f.max() <= 1.0
    x = np.zeros((9, 9, 1), dtype=np.float32)
    x[4, 4] = 1.0
    y = gaussian_blur(x, 1.0)
    assert y.sum() == pytest.approx(1.0, abs=1e-4) and y[4, 4, 0] < 1.0


def _reference_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """The separable blur written plainly (np.pad, a temporary per tap): the pixels the generated
    datasets were made with."""
    radius = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = x.shape[:2]
    p = np.pad(x.astype(np.float32), ((radius, radius), (0, 0), (0, 0)), mode="edge")
    y = p[0:h] * k[0]
    for i in range(1, len(k)):
        y += p[i : i + h] * k[i]
    p = np.pad(y, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    z = p[:, 0:w] * k[0]
    for i in range(1, len(k)):
        z += p[:, i : i + w] * k[i]
    return z


@pytest.mark.parametrize("sigma", [0.35, 0.5, 1.6, 3.0])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_is_bit_identical_to_the_plain_separable_blur(sigma: float, channels: int) -> None:
    x = np.random.default_rng(3).random((40, 57, channels), dtype=np.float32)
    assert np.array_equal(gaussian_blur(x, sigma), _reference_blur(x, sigma))


def test_clear_day_frame_is_bit_identical_to_the_plain_sensor_model(frame: np.ndarray) -> None:
    """The fast path (lookup table, in-place noise and quantization) makes the same pixels as the
    sensor model written plainly, so closed-loop frames match the generated datasets'."""
    got = apply_weather(frame, "clear", "day", np.random.default_rng(11), noise_sigma=0.015, blur_sigma=0.5)
    rng = np.random.default_rng(11)
    x = _reference_blur(frame.astype(np.float32) / 255.0, 0.5)
    x = x + 0.015 * rng.standard_normal(size=x.shape, dtype=np.float32)
    want = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(got, want)
