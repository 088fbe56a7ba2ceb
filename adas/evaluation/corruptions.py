"""Image corruptions x severities (COCO-C) and the robustness sweep over them.

Corruptions follow COCO-C (Michaelis et al. 2019, the ``imagecorruptions`` package), written
in numpy so no extra dependency is needed. A documented subset of the 15 that keeps every
*weather* corruption:

========== ==============================================================
noise      gaussian_noise, shot_noise, impulse_noise
blur       defocus_blur, motion_blur
weather    snow, frost, fog, brightness
digital    contrast, pixelate, jpeg_compression
========== ==============================================================

Left out: ``glass_blur``, ``zoom_blur`` and ``elastic_transform`` (10-100x the cost of the others
in numpy; blur and geometric distortion are represented by defocus/motion blur and pixelate).
Severity parameters are COCO-C's. Spatial parameters (blur radii, flake sizes) are scaled by
``long side / 640`` (COCO's typical width) so a severity means the same relative degradation on
a 384-px frame. ``frost`` uses a procedural ice texture instead of COCO-C's frost photographs.

Metrics (COCO-C): ``mPC`` = mean AP over corruptions and severities, ``rPC = mPC / AP_clean``,
and per corruption the least-squares **decay slope** of AP over severity (AP points per level).

Domain code: no Dagster import.
"""

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
from PIL import Image

from adas.datasets.weather import gaussian_blur, smooth_field
from adas.detector.coco_metrics import coco_metrics
from adas.detector.postprocess import Detections
from adas.evaluation.plots import png_bytes, pyplot
from adas.evaluation.runner import Predict

CATEGORY: Final[dict[str, str]] = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "defocus_blur": "blur",
    "motion_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "brightness": "weather",
    "contrast": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
}
_REF_WIDTH = 640.0


# --------------------------------------------------------------------------- corruptions
# Each takes float32 HxWx3 in [0, 1], a severity 1-5, a generator and the spatial scale.


def _gaussian_noise(x: np.ndarray, s: int, rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + rng.normal(0, c, x.shape).astype(np.float32)


def _shot_noise(x: np.ndarray, s: int, rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (60, 25, 12, 5, 3)[s - 1]
    return (rng.poisson(np.clip(x, 0, 1) * c) / c).astype(np.float32)


def _impulse_noise(x: np.ndarray, s: int, rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    out = x.copy()
    u = rng.random(x.shape)
    out[u < c / 2] = 0.0
    out[(u >= c / 2) & (u < c)] = 1.0
    return out


def _disk(radius: float, alias_sigma: float) -> np.ndarray:
    r = max(radius, 0.5)
    n = int(np.ceil(r))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    k = ((xx**2 + yy**2) <= r**2).astype(np.float32)
    k /= k.sum()
    if alias_sigma > 0:
        k = gaussian_blur(k[..., None], alias_sigma)[..., 0]
        k /= k.sum()
    return k


def _convolve(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D convolution of every channel with ``k`` (same size, reflected borders), via FFT."""
    kh, kw = k.shape
    ph, pw = kh // 2, kw // 2
    p = np.pad(x, ((ph, ph), (pw, pw), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    fh, fw = p.shape[:2]
    kf = np.fft.rfft2(k[::-1, ::-1], s=(fh, fw))
    out = np.fft.irfft2(np.fft.rfft2(p, axes=(0, 1)) * kf[..., None], s=(fh, fw), axes=(0, 1))
    return out[kh - 1 : kh - 1 + h, kw - 1 : kw - 1 + w].astype(np.float32)


def _defocus_blur(x: np.ndarray, s: int, _rng: np.random.Generator, k: float) -> np.ndarray:
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    return _convolve(x, _disk(radius * k, alias))


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    n = max(int(np.ceil(length)), 1)
    size = 2 * n + 1
    kern = np.zeros((size, size), np.float32)
    for t in np.linspace(-length / 2, length / 2, 4 * n + 1):
        y, x = n + t * np.sin(angle), n + t * np.cos(angle)
        kern[round(y), round(x)] += 1.0
    return kern / kern.sum()


def _motion_blur(x: np.ndarray, s: int, rng: np.random.Generator, k: float) -> np.ndarray:
    _radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[s - 1]
    return _convolve(x, _motion_kernel(sigma * k * 1.5, rng.uniform(-np.pi / 4, np.pi / 4)))


def _plasma(rng: np.random.Generator, h: int, w: int, decay: float) -> np.ndarray:
    """Fractal (multi-octave) noise in [0, 1]: ``decay`` is the amplitude ratio between octaves
    (COCO-C's ``wibbledecay``), larger = smoother."""
    out = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    for octave in range(5):
        cells = (max(1, int(2 * 2**octave * h / w + 1)), 2 * 2**octave + 1)
        out += amp * smooth_field(rng, h, w, cells)
        total += amp
        amp /= decay
    out /= total
    return (out - out.min()) / max(float(out.max() - out.min()), 1e-6)


def _fog(x: np.ndarray, s: int, rng: np.random.Generator, _k: float) -> np.ndarray:
    c0, decay = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[s - 1]
    h, w = x.shape[:2]
    mx = float(x.max()) if x.size else 1.0
    x = x + c0 * _plasma(rng, h, w, decay)[..., None]
    return x * mx / (mx + c0)


def _frost(x: np.ndarray, s: int, rng: np.random.Generator, k: float) -> np.ndarray:
    a, b = ((1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[s - 1]
    h, w = x.shape[:2]
    # Ice crystals: sharp bright streaks over a patchy, bluish-white haze.
    base = _plasma(rng, h, w, 1.3)
    crystals = np.zeros((h, w), np.float32)
    n = int(h * w * 0.01)
    ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
    crystals[ys, xs] = rng.uniform(0.5, 1.0, n)
    crystals = np.clip(
        _convolve(crystals[..., None], _motion_kernel(6 * k + 1, rng.uniform(0, np.pi)))[..., 0] * 3, 0, 1
    )
    frost = np.clip(0.55 * base + 0.6 * crystals, 0, 1)[..., None] * np.array([0.88, 0.93, 1.0], np.float32)
    return a * x + b * frost


def _snow(x: np.ndarray, s: int, rng: np.random.Generator, k: float) -> np.ndarray:
    density, haze, flake_len = (
        (0.010, 0.10, 4),
        (0.016, 0.18, 6),
        (0.024, 0.22, 8),
        (0.034, 0.28, 10),
        (0.045, 0.34, 12),
    )[s - 1]
    h, w = x.shape[:2]
    grey = x.mean(axis=2, keepdims=True)
    x = (1 - haze) * x + haze * np.maximum(x, grey * 1.5 + 0.5)
    flakes = np.zeros((h, w), np.float32)
    n = int(h * w * density)
    flakes[rng.integers(0, h, n), rng.integers(0, w, n)] = rng.uniform(0.6, 1.0, n)
    layer = _convolve(flakes[..., None], _motion_kernel(flake_len * k, rng.uniform(np.pi / 3, 2 * np.pi / 3)))
    layer = np.clip(layer * 3.0, 0, 1)
    return x * (1 - layer) + layer


def _brightness(x: np.ndarray, s: int, _rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    v = x.max(axis=2, keepdims=True)
    nv = np.clip(v + c, 0, 1)
    return np.where(v > 1e-6, x * nv / np.maximum(v, 1e-6), nv)


def _contrast(x: np.ndarray, s: int, _rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _pil_roundtrip(x: np.ndarray, fn: Callable[[Any], Any]) -> np.ndarray:
    img = Image.fromarray(np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8))
    return np.asarray(fn(img), np.float32) / 255.0


def _pixelate(x: np.ndarray, s: int, _rng: np.random.Generator, _k: float) -> np.ndarray:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    h, w = x.shape[:2]
    return _pil_roundtrip(
        x,
        lambda im: im.resize((max(1, int(w * c)), max(1, int(h * c))), Image.BOX).resize(
            (w, h), Image.NEAREST
        ),
    )


def _jpeg(x: np.ndarray, s: int, _rng: np.random.Generator, _k: float) -> np.ndarray:
    quality = (25, 18, 15, 10, 7)[s - 1]

    def roundtrip(im: Any) -> Any:
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        return Image.open(buf).convert("RGB")

    return _pil_roundtrip(x, roundtrip)


CORRUPTIONS: Final[dict[str, Callable[[np.ndarray, int, np.random.Generator, float], np.ndarray]]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "motion_blur": _motion_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg,
}


def corrupt(img: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """One corruption of a uint8 HxWx3 RGB frame at severity 1-5 (uint8 out)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if severity not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1-5, got {severity!r}")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
    k = max(img.shape[:2]) / _REF_WIDTH
    x = CORRUPTIONS[name](img.astype(np.float32) / 255.0, severity, rng, k)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _defined(v: float) -> float | None:
    return None if v < 0 else float(v)


def decay_slope(severities: Sequence[int], values: Sequence[float | None]) -> float | None:
    """Least-squares slope of a metric over severity (per level); None with < 2 defined points."""
    pts = [(s, v) for s, v in zip(severities, values, strict=True) if v is not None]
    if len(pts) < 2:
        return None
    xs = np.asarray([p[0] for p in pts], np.float64)
    ys = np.asarray([p[1] for p in pts], np.float64)
    return float(np.polyfit(xs, ys, 1)[0])


def robustness_sweep(
    predict: Predict,
    frames: np.ndarray,
    image_ids: Sequence[int],
    gt: Mapping[str, Any],
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int = 0,
    clean: Sequence[Detections] | None = None,
) -> dict[str, Any]:
    """AP of ``predict`` on every corruption x severity of ``frames`` (the ids' ground truth)."""
    ids = [int(i) for i in image_ids]

    def ap(dets: Sequence[Detections]) -> dict[str, float | None]:
        records = [r for i, d in zip(ids, dets, strict=True) for r in d.to_coco(i)]
        m = coco_metrics(dict(gt), records, image_ids=ids)
        return {"AP": _defined(m["AP"]), "AP50": _defined(m["AP50"])}

    clean_dets = list(clean) if clean is not None else predict(frames)
    clean_m = ap(clean_dets)
    out: dict[str, Any] = {
        "frames": len(ids),
        "severities": list(severities),
        "clean": clean_m,
        "corruptions": {},
    }
    all_ap: list[float] = []
    for ci, name in enumerate(corruptions):
        aps: list[float | None] = []
        ap50s: list[float | None] = []
        for s in severities:
            corrupted = (
                np.stack(
                    [
                        corrupt(f, name, s, np.random.default_rng([seed, ci, s, k]))
                        for k, f in enumerate(frames)
                    ]
                )
                if len(frames)
                else frames
            )
            m = ap(predict(corrupted))
            aps.append(m["AP"])
            ap50s.append(m["AP50"])
            if m["AP"] is not None:
                all_ap.append(m["AP"])
        slope = decay_slope(severities, aps)
        base = clean_m["AP"]
        out["corruptions"][name] = {
            "category": CATEGORY[name],
            "AP": aps,
            "AP50": ap50s,
            "mean_AP": float(np.mean([a for a in aps if a is not None]))
            if any(a is not None for a in aps)
            else None,
            "decay_slope_AP_per_severity": slope,
            "relative_AP": [None if a is None or not base else a / base for a in aps],
        }
    mpc = float(np.mean(all_ap)) if all_ap else None
    out["mPC"] = mpc
    out["rPC"] = None if mpc is None or not clean_m["AP"] else mpc / clean_m["AP"]
    by_cat: dict[str, list[float]] = {}
    for r in out["corruptions"].values():
        if r["mean_AP"] is not None:
            by_cat.setdefault(r["category"], []).append(r["mean_AP"])
    out["mPC_by_category"] = {c: float(np.mean(v)) for c, v in by_cat.items()}
    ranked = sorted(
        ((n, r["mean_AP"]) for n, r in out["corruptions"].items() if r["mean_AP"] is not None),
        key=lambda t: t[1],
    )
    out["worst_corruptions"] = [n for n, _ in ranked[:3]]
    if clean_m["AP"] is None:
        out["note"] = "the robustness frames have no ground truth: AP, mPC and rPC are undefined"
    return out


def plot_decay(report: Mapping[str, Any], title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sev = [0, *report.get("severities", [])]
    clean = report.get("clean", {}).get("AP")
    styles = {"noise": "-", "blur": "--", "weather": "-.", "digital": ":"}
    for name, r in report.get("corruptions", {}).items():
        ys = [clean, *r["AP"]]
        ys = [np.nan if v is None else 100 * v for v in ys]
        ax.plot(sev, ys, styles.get(r["category"], "-"), marker="o", markersize=3, label=name)
    ax.set_xlabel("severity (0 = clean)")
    ax.set_ylabel("AP")
    mpc, rpc = report.get("mPC"), report.get("rPC")
    sub = "" if mpc is None else f"  mPC {100 * mpc:.1f}, rPC {100 * (rpc or 0):.0f}%"
    ax.set_title(f"{title}{sub}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return png_bytes(fig)
