"""Weather, lighting and sensor-noise transforms for rendered top-down frames.

Pure numpy on uint8 HxWx3 RGB; every random draw comes from the ``numpy.random.Generator`` passed
in, so a transform is a deterministic function of (image, rng state, severity). Severity runs 1-5
(1 barely visible, 5 most objects hard to see), in the spirit of the COCO-C corruptions, so
robustness studies can sweep it.

Internally images are float32 in [0, 1]; values may exceed 1 transiently (glare) and are clipped
when converting back, which is what saturates a sensor.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from adas.datasets.coco import LIGHTINGS, WEATHERS

FloatImage = np.ndarray  # HxWx3 float32, nominally in [0, 1]

SEVERITIES: Final[tuple[int, ...]] = (1, 2, 3, 4, 5)
DEFAULT_NOISE_SIGMA: Final[float] = 0.015
DEFAULT_BLUR_SIGMA: Final[float] = 0.5


def apply_weather(
    img: np.ndarray,
    weather: str,
    lighting: str,
    rng: np.random.Generator,
    severity: int = 3,
    *,
    layout_rng: np.random.Generator | None = None,
    noise_sigma: float = DEFAULT_NOISE_SIGMA,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> np.ndarray:
    """Apply ``weather`` then ``lighting`` then sensor noise to a uint8 HxWx3 frame.

    ``layout_rng`` draws the spatially static parts (fog density field, glare spots, rain angle);
    pass a generator seeded per scene so these stay put across the frames of a sequence. Without
    it they come from ``rng``.
    """
    _check_image(img)
    if weather not in WEATHERS:
        raise ValueError(f"unknown weather {weather!r}; expected one of {', '.join(WEATHERS)}")
    if lighting not in LIGHTINGS:
        raise ValueError(f"unknown lighting {lighting!r}; expected one of {', '.join(LIGHTINGS)}")
    _check_severity(severity)
    layout = layout_rng if layout_rng is not None else rng

    x = img.astype(np.float32) / 255.0
    if weather == "fog":
        x = fog(x, rng, severity, layout)
    elif weather == "rain":
        x = rain(x, rng, severity, layout)
    elif weather == "snow":
        x = snow(x, rng, severity, layout)
    if lighting == "night":
        x = night(x, rng, severity, layout)
    elif lighting == "glare":
        x = glare(x, rng, severity, layout)
    x = sensor_noise(x, rng, sigma=noise_sigma, blur_sigma=blur_sigma)
    return to_uint8(x)


def to_uint8(x: FloatImage) -> np.ndarray:
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Individual transforms (float32 in, float32 out)


def sensor_noise(
    x: FloatImage,
    rng: np.random.Generator,
    sigma: float = DEFAULT_NOISE_SIGMA,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> FloatImage:
    """Optics blur plus gaussian read noise: every camera frame has some, so every frame gets it."""
    if blur_sigma > 0:
        x = gaussian_blur(x, blur_sigma)
    if sigma > 0:
        x = x + sigma * rng.standard_normal(size=x.shape, dtype=np.float32)
    return x


def fog(x: FloatImage, rng: np.random.Generator, severity: int, layout: np.random.Generator) -> FloatImage:
    """Scattering: blend towards a bright airlight with a patchy transmission, then blur.

    Transmission at severity 5 is ~0.1 on average, so a 3-px motorcycle keeps a few grey levels
    of contrast under noise: small objects genuinely disappear, as in dense fog.
    """
    h, w = x.shape[:2]
    mean_t = {1: 0.70, 2: 0.50, 3: 0.34, 4: 0.21, 5: 0.11}[severity]
    field = smooth_field(layout, h, w, cells=(3, 8))  # in [0, 1]
    t = np.clip(mean_t * (0.55 + 0.9 * field), 0.03, 1.0)[..., None]
    airlight = np.array([0.78, 0.79, 0.80], dtype=np.float32) + rng.normal(0, 0.01, 3).astype(np.float32)
    x = x * t + airlight * (1.0 - t)
    return gaussian_blur(x, 0.35 + 0.3 * severity)


def rain(x: FloatImage, rng: np.random.Generator, severity: int, layout: np.random.Generator) -> FloatImage:
    """Darker, blurrier, lower-contrast frame with bright slanted streaks in front of everything."""
    h, w = x.shape[:2]
    angle = layout.uniform(-0.5, 0.5)  # streak slant [rad] from vertical, fixed per scene
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = mean + (x - mean) * (1.0 - 0.07 * severity)
    x = x * (1.0 - 0.06 * severity)
    x = gaussian_blur(x, 0.3 + 0.2 * severity)
    n = int(h * w * (0.004 + 0.003 * severity))
    length = rng.integers(4, 8 + 2 * severity, size=n)
    layer = _streaks(h, w, rng, n, length, angle)
    layer = gaussian_blur(layer[..., None], 0.5)[..., 0]
    alpha = np.clip(layer * (0.35 + 0.08 * severity), 0.0, 0.85)[..., None]
    return x * (1.0 - alpha) + 0.85 * alpha


def snow(x: FloatImage, rng: np.random.Generator, severity: int, layout: np.random.Generator) -> FloatImage:
    """Brighter, washed-out frame with whitish ground patches and white flakes of several sizes."""
    h, w = x.shape[:2]
    haze = 0.07 * severity
    x = x * (1.0 - haze) + 0.92 * haze
    patches = smooth_field(layout, h, w, cells=(6, 20)) ** 2  # snow on the road: low-frequency clutter
    pa = (patches * (0.08 + 0.06 * severity))[..., None]
    x = x * (1.0 - pa) + 0.95 * pa
    flakes = np.zeros((h, w), dtype=np.float32)
    n = int(h * w * (0.006 + 0.006 * severity))
    ys = rng.integers(0, h, size=n)
    xs = rng.integers(0, w, size=n)
    np.add.at(flakes, (ys, xs), rng.uniform(0.6, 1.6, size=n).astype(np.float32))
    small = np.clip(gaussian_blur(flakes[..., None], 0.45)[..., 0] * 2.2, 0, 1)
    # A few large, out-of-focus flakes close to the lens.
    m = int(6 + 6 * severity)
    big = np.zeros((h, w), dtype=np.float32)
    np.add.at(big, (rng.integers(0, h, size=m), rng.integers(0, w, size=m)), 1.0)
    big = np.clip(gaussian_blur(big[..., None], 1.6)[..., 0] * 14.0, 0, 0.9)
    alpha = np.clip(small + big, 0, 1)[..., None]
    return x * (1.0 - alpha) + 0.97 * alpha


def night(x: FloatImage, rng: np.random.Generator, severity: int, layout: np.random.Generator) -> FloatImage:
    """Dark, low-contrast, blue-shifted frame with high-gain noise and a few light glints."""
    h, w = x.shape[:2]
    gain = {1: 0.60, 2: 0.48, 3: 0.38, 4: 0.30, 5: 0.22}[severity]
    x = np.power(np.clip(x, 0, None), 1.15) * gain
    x = x * np.array([0.72, 0.85, 1.12], dtype=np.float32) + 0.025
    # Street lights / headlight glints: bright warm blobs that are not vehicles.
    n = int(layout.integers(2, 4 + severity))
    cy = layout.uniform(0, h, n)
    cx = layout.uniform(0, w, n)
    rad = layout.uniform(2.0, 5.0 + severity, n)
    amp = rng.uniform(0.15, 0.45, n)
    glow = _blobs(h, w, cy, cx, rad, rad, amp)[..., None]
    x = x + glow * np.array([1.0, 0.85, 0.55], dtype=np.float32)
    # Low light means high sensor gain: strong luminance plus chroma noise.
    sigma = 0.010 + 0.006 * severity
    x = x + sigma * rng.standard_normal(size=(h, w, 1), dtype=np.float32)
    return x + (0.5 * sigma) * rng.standard_normal(size=x.shape, dtype=np.float32)


def glare(x: FloatImage, rng: np.random.Generator, severity: int, layout: np.random.Generator) -> FloatImage:
    """Low sun / oncoming lights: saturating bright patches and a lens streak that hide what is under them."""
    h, w = x.shape[:2]
    n = 1 + severity // 2
    cy = layout.uniform(0.1 * h, 0.9 * h, n)
    cx = layout.uniform(0.05 * w, 0.95 * w, n)
    ry = layout.uniform(6.0, 10.0 + 3.0 * severity, n)
    rx = ry * layout.uniform(1.0, 2.5, n)
    amp = rng.uniform(1.0, 1.4, n) + 0.15 * severity
    spots = _blobs(h, w, cy, cx, ry, rx, amp)
    streak_y = cy[0] + rng.normal(0, 1.0)
    yy = np.arange(h, dtype=np.float32)[:, None]
    streak = (0.15 + 0.08 * severity) * np.exp(-0.5 * ((yy - streak_y) / (1.0 + 0.3 * severity)) ** 2)
    light = (spots + np.broadcast_to(streak, (h, w)))[..., None]
    veil = 0.03 * severity  # veiling glare lifts the blacks everywhere
    x = x * (1.0 - veil) + veil
    return x + light * np.array([1.0, 0.97, 0.86], dtype=np.float32)


# --------------------------------------------------------------------------------------------------
# Helpers


def gaussian_blur(x: FloatImage, sigma: float) -> FloatImage:
    """Separable gaussian blur with edge padding (HxWxC float32), accumulated in place.

    Each pass sums ``k[i] * shifted`` in tap order into one buffer, the products written into
    one scratch buffer (no temporary per tap)."""
    if sigma <= 0:
        return x
    radius = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2).astype(np.float32)
    k /= k.sum()
    h, w = x.shape[:2]
    p = np.pad(x.astype(np.float32, copy=False), ((radius, radius), (0, 0), (0, 0)), mode="edge")
    y = np.multiply(p[0:h], k[0])
    scratch = np.empty_like(y)
    for i in range(1, len(k)):
        y += np.multiply(p[i : i + h], k[i], out=scratch)
    p = np.pad(y, ((0, 0), (radius, radius), (0, 0)), mode="edge")
    z = np.multiply(p[:, 0:w], k[0])
    for i in range(1, len(k)):
        z += np.multiply(p[:, i : i + w], k[i], out=scratch)
    return z


def smooth_field(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency random field in [0, 1]: bilinear upsampling of a coarse uniform grid."""
    gy, gx = cells
    grid = rng.uniform(0.0, 1.0, size=(gy + 1, gx + 1)).astype(np.float32)
    ys = np.linspace(0, gy, h, dtype=np.float32)
    xs = np.linspace(0, gx, w, dtype=np.float32)
    y0 = np.minimum(ys.astype(int), gy - 1)
    x0 = np.minimum(xs.astype(int), gx - 1)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fy) * (1 - fx) + b * (1 - fy) * fx + c * fy * (1 - fx) + d * fy * fx).astype(np.float32)


def _blobs(
    h: int, w: int, cy: np.ndarray, cx: np.ndarray, ry: np.ndarray, rx: np.ndarray, amp: np.ndarray
) -> np.ndarray:
    """Sum of axis-aligned gaussian blobs, each evaluated only within 3.5 sigma of its centre."""
    out = np.zeros((h, w), dtype=np.float32)
    for y, x_, sy, sx, a in zip(cy, cx, ry, rx, amp, strict=True):
        y0, y1 = max(int(y - 3.5 * sy), 0), min(int(y + 3.5 * sy) + 1, h)
        x0, x1 = max(int(x_ - 3.5 * sx), 0), min(int(x_ + 3.5 * sx) + 1, w)
        if y0 >= y1 or x0 >= x1:
            continue
        gy = np.exp(-0.5 * ((np.arange(y0, y1, dtype=np.float32) - y) / sy) ** 2)
        gx = np.exp(-0.5 * ((np.arange(x0, x1, dtype=np.float32) - x_) / sx) ** 2)
        out[y0:y1, x0:x1] += a * np.outer(gy, gx)
    return out


def _streaks(
    h: int, w: int, rng: np.random.Generator, n: int, length: np.ndarray, angle: float
) -> np.ndarray:
    """Thin line segments of given lengths, all slanted by ``angle`` (rain falls nearly straight)."""
    layer = np.zeros((h, w), dtype=np.float32)
    y0 = rng.uniform(-8, h, n)
    x0 = rng.uniform(-8, w + 8, n)
    dy, dx = np.cos(angle), np.sin(angle)
    intensity = rng.uniform(0.5, 1.0, n).astype(np.float32)
    max_len = int(length.max()) if n else 0
    for t in range(max_len):
        on = t < length
        ys = np.round(y0 + t * dy).astype(int)
        xs = np.round(x0 + t * dx).astype(int)
        keep = on & (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        np.maximum.at(layer, (ys[keep], xs[keep]), intensity[keep])
    return layer


def _check_image(img: np.ndarray) -> None:
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got dtype={img.dtype} shape={img.shape}")


def _check_severity(severity: int) -> None:
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer 1-5, got {severity!r}")
