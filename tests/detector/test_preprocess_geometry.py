"""Stretch and letterbox placement, BGR, and the inverse that maps boxes back to the source frame."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from adas.detector.preprocess import normalize, placement, preprocess
from adas.intake.contract import InputSpec, Normalization, SourceSizeInput
from adas.intake.feeds import feed_names, model_feeds

NORM = Normalization(scale=1 / 255, mean=(0.1, 0.2, 0.3), std=(0.5, 0.25, 0.125))


def _spec(h: int, w: int, **kw: object) -> InputSpec:
    return InputSpec(name="images", shape=[-1, 3, h, w], dtype="float32", normalization=NORM, **kw)  # type: ignore[arg-type]


def _frames(n: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(h * w + n).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_stretch_at_the_input_size_is_todays_normalize_byte_for_byte() -> None:
    frames = _frames(3, 96, 384)
    x, geometry = preprocess(frames, _spec(96, 384))
    assert x.tobytes() == normalize(frames, NORM).tobytes()
    assert geometry.is_identity and geometry.scale_xy == (1.0, 1.0)


def test_stretch_of_another_size_resizes_as_the_evaluation_frames_are() -> None:
    frames = _frames(2, 48, 200)
    x, geometry = preprocess(frames, _spec(96, 384))
    # adas.evaluation.runner.decode_frame: PIL bilinear to (w, h), then normalize.
    today = np.stack([np.asarray(Image.fromarray(f).resize((384, 96), Image.BILINEAR)) for f in frames])
    assert x.tobytes() == normalize(today, NORM).tobytes()
    assert geometry.scale_xy == (384 / 200, 2.0) and geometry.pad_xy == (0, 0)
    # Hand-computed inverse: x / (384/200), y / 2.
    np.testing.assert_allclose(geometry.boxes_to_source(np.array([[192, 10, 384, 96]])), [[100, 5, 200, 48]])


@pytest.mark.parametrize(
    ("where", "pad_xy", "source_box"),
    [
        # 96x384 into 160x512: r = 4/3, resized 128x512, 32 rows of padding.
        ("center", (0, 16), [75.0, 15.0, 105.0, 30.0]),  # 16 rows on top
        ("top_left", (0, 0), [75.0, 27.0, 105.0, 42.0]),  # all padding below
    ],
)
def test_letterbox_geometry_and_its_inverse(
    where: str, pad_xy: tuple[int, int], source_box: list[float]
) -> None:
    g = placement((96, 384), (160, 512), "letterbox", where)
    assert g.pad_xy == pad_xy and g.resized_hw == (128, 512)
    np.testing.assert_allclose(g.boxes_to_source(np.array([[100, 36, 140, 56]])), [source_box], rtol=1e-6)
    # Forward then back is the identity; a box in the padding is clipped to the frame.
    src = np.array([[10.5, 3.25, 200.0, 90.0]])
    sx, sy = g.scale_xy
    fwd = src * [sx, sy, sx, sy] + [*pad_xy, *pad_xy]
    np.testing.assert_allclose(g.boxes_to_source(fwd), src, rtol=1e-6)
    np.testing.assert_allclose(g.boxes_to_source(np.array([[0, 0, 512, 160]])), [[0, 0, 384, 96]])


def test_letterbox_pads_where_it_says_with_the_pad_value() -> None:
    frames = np.full((1, 2, 4, 3), 200, np.uint8)
    ones = Normalization(scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
    spec = InputSpec(
        name="i",
        shape=[-1, 3, 4, 4],
        dtype="float32",
        normalization=ones,
        resize="letterbox",
        letterbox={"placement": "center", "pad_value": 7},  # type: ignore[arg-type]
    )
    x, g = preprocess(frames, spec)
    assert g.pad_xy == (0, 1)
    np.testing.assert_array_equal(x[0, 0, :, 0], [7, 200, 200, 7])
    top_left = spec.model_copy(
        update={"letterbox": spec.letterbox.model_copy(update={"placement": "top_left"})}
    )  # type: ignore[union-attr]
    x, g = preprocess(frames, top_left)
    assert g.pad_xy == (0, 0)
    np.testing.assert_array_equal(x[0, 0, :, 0], [200, 200, 7, 7])


def test_letterbox_defaults_and_refusals() -> None:
    spec = _spec(160, 512, resize="letterbox")
    assert spec.letterbox is not None and (spec.letterbox.placement, spec.letterbox.pad_value) == (
        "center",
        114,
    )
    with pytest.raises(ValueError, match="letterbox applies only"):
        _spec(96, 384, letterbox={"placement": "center"})


def test_bgr_reverses_channels_before_normalizing() -> None:
    frames = np.zeros((1, 2, 2, 3), np.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 255, 51, 0  # R, G, B
    ones = Normalization(scale=1 / 255, mean=(0, 0, 0), std=(1, 1, 1))
    x = normalize(frames, ones, "BGR")
    np.testing.assert_allclose(x[0, :, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)  # B, G, R
    x, _ = preprocess(
        frames, InputSpec(name="i", shape=[-1, 3, 2, 2], dtype="float32", normalization=ones, color="BGR")
    )
    np.testing.assert_allclose(x[0, :, 0, 0], [0.0, 0.2, 1.0], rtol=1e-6)
    with pytest.raises(ValueError, match="color"):
        normalize(frames, ones, "GBR")


def test_model_feeds_carry_the_source_size_in_the_models_order() -> None:
    x = np.zeros((2, 3, 160, 512), np.float32)
    norm = Normalization(scale=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    spec = InputSpec(
        name="images", shape=[-1, 3, 160, 512], dtype="float32", normalization=norm,
        source_size=SourceSizeInput(name="orig_target_sizes", order="wh"),
    )  # fmt: skip
    feeds = model_feeds(spec, x, (96, 384))
    assert list(feeds) == ["images", "orig_target_sizes"] and feeds["images"].shape == x.shape
    assert feeds["orig_target_sizes"].dtype == np.int64
    assert feeds["orig_target_sizes"].tolist() == [[384, 96], [384, 96]]
    # PaddleDetection's im_shape: height first, float32; a noise probe defaults to the input's size.
    spec = spec.model_copy(update={"source_size": SourceSizeInput(name="im_shape", order="hw", dtype="float32")})
    hw = model_feeds(spec, x)["im_shape"]
    assert hw.dtype == np.float32 and hw.tolist() == [[160, 512], [160, 512]]
    # Without a declared source-size input the model is fed its image only.
    assert list(model_feeds(spec.model_copy(update={"source_size": None}), x, (96, 384))) == ["images"]
    assert feed_names(spec) == ["images", "im_shape"] == list(model_feeds(spec, x))
