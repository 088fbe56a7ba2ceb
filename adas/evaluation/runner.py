"""Run a packaged engine over frames: batched, through the contract's preprocess and decoder.

Evaluation runs the *packaged engine* of a device x precision cell, never the training-time
model. An ``Engine`` is anything with ``run(x) -> {output name: array}`` on preprocessed NCHW
float32 batches (``adas.packaging.ort_engines.OrtEngine`` for ONNX Runtime engines). Frames go
in at their own size; each model's ``input`` (stretch or letterbox, colour, normalization) places
them, and its kind's decoder returns boxes in the frames' pixels, so models of different families
and input sizes are evaluated on the very same frames.

Besides the decoded detections, each frame keeps two image-level scores for OOD and uncertainty
studies. For a heatmap head they come from the raw heatmap logits:

* ``max_score``: the largest sigmoid over every cell and class (the detector's analogue of the
  maximum softmax probability);
* ``energy``: the free energy of Liu et al. (2020) adapted to a dense sigmoid head. Each cell is
  a binary (object / background) classifier whose energy is ``-log(1 + e^l) = -softplus(l)``
  for its best class logit ``l``; the image's energy is the mean over its ``ENERGY_TOP_K``
  strongest cells (its detection candidates). Lower = more confident = more in-distribution.
  (A logsumexp over *every* cell would be dominated by the thousands of background cells and
  rank textured OOD scenes as the most in-distribution.)

Other kinds expose no common raw tensor, so both come from the decoded candidates (evaluation
decodes at a low threshold): ``max_score`` the best candidate's score, ``energy`` the same free
energy over the ``ENERGY_TOP_K`` best candidates, ``-softplus(logit(p)) = log(1 - p)``.

Domain code: no Dagster import.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from adas.detector.decoders import decode
from adas.detector.postprocess import Detections, sigmoid, with_score_threshold
from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract, Normalization
from adas.packaging import tensorrt_engines
from adas.packaging.ort_engines import OrtEngine

# ``frames -> detections``: what the robustness sweeps and sensor-fault checks call.
Predict = Callable[[np.ndarray], list[Detections]]


class Engine(Protocol):
    """``run(x, source_hw)``: a placed batch, and the frames' source size for a model that takes it."""

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]: ...


class EngineUnavailableError(RuntimeError):
    """The engine's runtime cannot run on this machine (e.g. a TensorRT plan without a GPU)."""


def open_engine(path: str | Path, runtime: str, contract: Contract, intra_op_threads: int = 2) -> Engine:
    """An engine for a packaged model file; ``runtime`` is ``EngineRef.runtime``."""
    if runtime == "onnxruntime":
        return OrtEngine(path, intra_op_threads=intra_op_threads, contract=contract)
    if runtime == "tensorrt":
        try:
            return tensorrt_engines.TensorRTEngine(path, contract=contract)  # type: ignore[attr-defined]
        except (ImportError, AttributeError, RuntimeError) as exc:
            raise EngineUnavailableError(
                f"{path}: a TensorRT engine needs a GPU node with TensorRT to be evaluated ({exc})"
            ) from exc
    raise EngineUnavailableError(f"{path}: unknown runtime {runtime!r}")


# --------------------------------------------------------------------------- predictions


@dataclass
class Predictions:
    """Detections of one engine on a list of frames, in ``image_ids`` order."""

    image_ids: list[int]
    detections: list[Detections]
    max_score: np.ndarray  # (N,) float
    energy: np.ndarray  # (N,) float
    seconds: float = 0.0
    _records: list[dict[str, Any]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (len(self.image_ids) == len(self.detections) == len(self.max_score) == len(self.energy)):
            raise ValueError("image_ids, detections and image scores differ in length")

    def __len__(self) -> int:
        return len(self.image_ids)

    def records(self) -> list[dict[str, Any]]:
        """COCO result records (``bbox`` as [x, y, w, h]) of every frame."""
        if self._records is None:
            self._records = [
                r for i, d in zip(self.image_ids, self.detections, strict=True) for r in d.to_coco(i)
            ]
        return self._records

    def by_image(self) -> dict[int, Detections]:
        return dict(zip(self.image_ids, self.detections, strict=True))

    def subset(self, image_ids: Iterable[int]) -> Predictions:
        index = {i: k for k, i in enumerate(self.image_ids)}
        ks = [index[int(i)] for i in image_ids if int(i) in index]
        return Predictions(
            [self.image_ids[k] for k in ks],
            [self.detections[k] for k in ks],
            self.max_score[ks],
            self.energy[ks],
            self.seconds,
        )

    def to_json(self) -> bytes:
        body = {
            "format": "adas-predictions v1",
            "image_ids": [int(i) for i in self.image_ids],
            "max_score": [round(float(v), 6) for v in self.max_score],
            "energy": [round(float(v), 4) for v in self.energy],
            "seconds": round(self.seconds, 3),
            # Boxes and scores exactly (float32 values): rounded, an INT8 engine's near-equal
            # scores became ties whose order moved the report's AP by 4e-4 for a reader recomputing it.
            "detections": [
                {
                    "boxes_xyxy": d.boxes.astype(np.float32).astype(np.float64).tolist(),
                    "scores": d.scores.astype(np.float32).astype(np.float64).tolist(),
                    "category_ids": d.category_ids.astype(int).tolist(),
                }
                for d in self.detections
            ],
        }
        return json.dumps(body, separators=(",", ":")).encode()

    @staticmethod
    def from_json(data: bytes | str) -> Predictions:
        body = json.loads(data)
        dets = [
            Detections(
                np.asarray(d["boxes_xyxy"], np.float32).reshape(-1, 4),
                np.asarray(d["scores"], np.float32),
                np.asarray(d["category_ids"], np.int64),
            )
            for d in body["detections"]
        ]
        return Predictions(
            [int(i) for i in body["image_ids"]],
            dets,
            np.asarray(body["max_score"], np.float64),
            np.asarray(body["energy"], np.float64),
            float(body.get("seconds", 0.0)),
        )


def empty_predictions(image_ids: Sequence[int]) -> Predictions:
    n = len(image_ids)
    return Predictions(list(image_ids), [Detections.empty() for _ in range(n)], np.zeros(n), np.zeros(n), 0.0)


ENERGY_TOP_K = 10


def image_energy(heat_logits: np.ndarray, k: int = ENERGY_TOP_K) -> np.ndarray:
    """Per image: ``-mean(softplus(l))`` over the ``k`` cells with the largest best-class logit."""
    best = heat_logits.astype(np.float64).max(axis=1).reshape(heat_logits.shape[0], -1)
    k = min(k, best.shape[1])
    top = -np.partition(-best, k - 1, axis=1)[:, :k]
    return -np.logaddexp(0.0, top).mean(axis=1)


def candidate_scores(dets: Sequence[Detections], k: int = ENERGY_TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """(max_score, energy) per image from decoded candidates: the best score, and the mean of
    ``log(1 - p)`` over the ``k`` best (an absent candidate counts as p = 0)."""
    max_score = np.array([float(d.scores.max()) if len(d) else 0.0 for d in dets])
    top = np.zeros((len(dets), k))
    for i, d in enumerate(dets):
        best = np.sort(d.scores.astype(np.float64))[::-1][:k]
        top[i, : len(best)] = best
    return max_score, np.log1p(-np.clip(top, 0.0, 1.0 - 1e-12)).mean(axis=1)


def predict(
    engine: Engine,
    frames_uint8: np.ndarray,
    image_ids: Sequence[int],
    contract: Contract,
    *,
    score_threshold: float | None = None,
    batch_size: int = 32,
    scales: Sequence[tuple[float, float]] | None = None,
) -> Predictions:
    """Detections of ``engine`` on uint8 RGB frames [N, H, W, 3] of any one size, in their pixels.

    ``score_threshold`` overrides the contract's (evaluation keeps the low-score tail);
    ``scales[i] = (sx, sy)`` maps boxes of frame ``i`` further back to its original pixel grid
    (for frames that were resized when loaded).
    """
    if len(frames_uint8) != len(image_ids):
        raise ValueError(f"{len(frames_uint8)} frames but {len(image_ids)} image ids")
    post = with_score_threshold(contract.postprocess, score_threshold)
    class_ids = [c.id for c in contract.classes]
    heatmap = post.kind == "heatmap"
    dets: list[Detections] = []
    max_score: list[np.ndarray] = []
    energy: list[np.ndarray] = []
    t0 = time.perf_counter()
    for s in range(0, len(frames_uint8), batch_size):
        x, geometry = preprocess(frames_uint8[s : s + batch_size], contract.input)
        outs = engine.run(x, geometry.source_hw)
        batch = decode(outs, post, class_ids, geometry=geometry, input_hw=contract.input.height_width)
        dets.extend(batch)
        if heatmap:
            heat = np.asarray(outs[post.heatmap_output], np.float32)
            max_score.append(sigmoid(heat.reshape(heat.shape[0], -1).max(axis=1)))
            energy.append(image_energy(heat))
        else:
            best, free_energy = candidate_scores(batch)
            max_score.append(best)
            energy.append(free_energy)
    seconds = time.perf_counter() - t0
    if scales is not None:
        dets = [
            d.scaled(sx, sy) if (sx, sy) != (1.0, 1.0) else d
            for d, (sx, sy) in zip(dets, scales, strict=True)
        ]
    n = len(image_ids)
    return Predictions(
        [int(i) for i in image_ids],
        dets,
        np.concatenate(max_score) if max_score else np.zeros(n),
        np.concatenate(energy) if energy else np.zeros(n),
        seconds,
    )


def predict_fn(
    engine: Engine, contract: Contract, score_threshold: float | None, batch_size: int = 32
) -> Predict:
    """``frames -> detections`` closure for sweeps (robustness, sensor faults)."""

    def run(frames: np.ndarray) -> list[Detections]:
        ids = list(range(len(frames)))
        return predict(
            engine, frames, ids, contract, score_threshold=score_threshold, batch_size=batch_size
        ).detections

    return run


# --------------------------------------------------------------------------- frames


def frame_size(coco: Mapping[str, Any]) -> tuple[int, int]:
    """The size frames of a manifest are loaded at: its first image's (every model places them
    itself; frames of another size are resized to this one and their boxes scaled back)."""
    images = coco.get("images") or []
    if not images:
        raise ValueError("the manifest has no images")
    return int(images[0]["height"]), int(images[0]["width"])


def decode_frame(data: bytes, size_hw: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
    """PNG/JPEG bytes -> uint8 RGB [H, W, 3] at ``size_hw``, and the (sx, sy) that maps boxes at
    that size back to the original frame."""
    h, w = size_hw
    with Image.open(io.BytesIO(data)) as pil:
        rgb = pil.convert("RGB")
        ow, oh = rgb.size
        if (ow, oh) != (w, h):
            rgb = rgb.resize((w, h), Image.BILINEAR)
        return np.asarray(rgb, np.uint8), (ow / w, oh / h)


def load_frames(
    read: Callable[[str], bytes], file_names: Sequence[str], size_hw: tuple[int, int]
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Frames named relative to a dataset root; ``read(file_name) -> bytes`` does the I/O
    (the artifact store verifies each file's sha256 there)."""
    h, w = size_hw
    frames = np.empty((len(file_names), h, w, 3), np.uint8)
    scales = []
    for k, name in enumerate(file_names):
        frames[k], scale = decode_frame(read(name), size_hw)
        scales.append(scale)
    return frames, scales


# --------------------------------------------------------------------------- degraded engines


class MaskedEngine:
    """Wraps an engine and blinds it on the frames ``blind(x_batch) -> bool mask`` selects:
    their heatmap logits are pushed to -30, so decode yields nothing there.

    A deliberately degraded candidate for gate tests and demos ("blind in fog").
    """

    def __init__(self, inner: Engine, blind: Callable[[np.ndarray], np.ndarray], heatmap_output: str) -> None:
        self.inner = inner
        self.blind = blind
        self.heatmap_output = heatmap_output

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        outs = dict(self.inner.run(x, source_hw))
        mask = np.asarray(self.blind(x), bool)
        if mask.any():
            heat = np.array(outs[self.heatmap_output], copy=True)
            heat[mask] = -30.0
            outs[self.heatmap_output] = heat
        return outs


def fog_mask(
    normalization: Normalization, min_mean: float = 140.0, max_std: float = 13.0
) -> Callable[[np.ndarray], np.ndarray]:
    """Selects bright, flat frames (pixel mean above ``min_mean``, standard deviation below
    ``max_std``, 0-255 units): what airlight blending does to a daytime frame in fog."""
    mean = np.asarray(normalization.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(normalization.std, np.float32).reshape(1, 3, 1, 1)
    scale = float(normalization.scale)

    def blind(x: np.ndarray) -> np.ndarray:
        pixels = (x * std + mean) / scale
        flat = pixels.reshape(pixels.shape[0], -1)
        return (flat.mean(axis=1) > min_mean) & (flat.std(axis=1) < max_std)

    return blind


class IdMaskedPredictions:
    """Blinds a set of image ids in existing predictions (constructed degraded candidates)."""

    @staticmethod
    def apply(preds: Predictions, blind_ids: Iterable[int]) -> Predictions:
        blind = {int(i) for i in blind_ids}
        dets = [
            Detections.empty() if i in blind else d
            for i, d in zip(preds.image_ids, preds.detections, strict=True)
        ]
        return Predictions(
            list(preds.image_ids), dets, preds.max_score.copy(), preds.energy.copy(), preds.seconds
        )


def records_by_image(records: Iterable[Mapping[str, Any]]) -> dict[int, list[Mapping[str, Any]]]:
    out: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(int(r["image_id"]), []).append(r)
    return out


# --------------------------------------------------------------------------- latency


def measure_latency(
    engine: Engine, input_shape_chw: Sequence[int], runs: int = 60, warmup: int = 10, seed: int = 0
) -> dict[str, float]:
    """p50 / p95 / mean wall time of ``engine.run`` at batch 1 (milliseconds).

    A fallback for engines whose packaging did not record a latency: the platform's reference
    numbers come from packaging's microbenchmark on the target node.
    """
    x = np.random.default_rng(seed).standard_normal((1, *input_shape_chw)).astype(np.float32)
    for _ in range(warmup):
        engine.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.run(x)
        times.append((time.perf_counter() - t) * 1e3)
    arr = np.asarray(times)
    return {
        "p50_ms": float(np.percentile(arr, 50)),
        "p95_ms": float(np.percentile(arr, 95)),
        "mean_ms": float(arr.mean()),
        "runs": float(runs),
    }


def latency_from_build(build: Mapping[str, Any]) -> dict[str, Any] | None:
    """The packaging microbenchmark's batch-1 latency if the engine build recorded one, with
    ``contended`` (why the host was too busy to judge a budget) when the build said so.

    Accepts ``build['latency']`` as ``{"p95_ms": .., "p50_ms": ..}``, ``{"p95": ..}`` or keyed
    by batch size (``{"1": {"p95_ms": ..}}``).
    """
    lat = build.get("latency") if isinstance(build, Mapping) else None
    if not isinstance(lat, Mapping):
        return None
    contended = lat.get("contended")
    for key in ("1", 1, "batch_1", "b1"):
        if isinstance(lat.get(key), Mapping):
            lat = lat[key]
            break
    p95 = lat.get("p95_ms", lat.get("p95"))
    if p95 is None:
        return None
    p50 = lat.get("p50_ms", lat.get("p50"))
    return {
        "p95_ms": float(p95),
        **({"p50_ms": float(p50)} if p50 is not None else {}),
        **({"contended": str(contended)} if contended else {}),
    }
