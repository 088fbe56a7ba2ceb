"""Is the engine the same model as the PyTorch program it was built from?

Three levels, each with tolerances per precision from ``config/packaging.yaml``:

1. raw heads (kinds with a meaningful raw head only: heatmap and dense; a model that decodes
   itself emits rows whose order and padding a tiny drift reshuffles) on >= 1000 randomized inputs (uniform noise over the normalized input range and
   perturbed real frames: gain, offset, gaussian noise) plus the real frames: per head max,
   mean and p99 of the absolute error and of the relative error (|error| divided by the
   head's dynamic range, max |reference|, in the same batch; an elementwise ratio would
   explode on the many near-zero values);
2. detections after the contract's decoder (``adas.detector.decoders.decode``, every kind) on
   the real frames, placed as the contract's ``input`` says and mapped back to frame pixels: matched boxes (same class, IoU >=
   match_iou, greedy by IoU) give the IoU drift (1 - IoU) and the score drift; unmatched
   boxes are missing (reference only) or extra (engine only), not counting borderline boxes
   within ``score_margin`` of the threshold, which a bounded score drift can legitimately flip;
3. for INT8, the task metric: ``task_map_drop`` (COCO mAP@[.5:.95] on a validation subset).

Every failure is a sentence naming the head (or "decode") and the metric against its bound.

Kept as one module because the three levels share the tolerances, the reference run and the
decode. torch is imported where the reference runs: the code location imports this module.

The reference is an :class:`Engine` too. In packaging it is the candidate's program running in
the sandbox (:func:`adas.packaging.sandboxed_model.sandboxed_reference`, whose worker calls
:func:`run_reference`); :class:`ModuleReference` wraps a module already in this process, for
tools that run a trusted model of their own (the GPU benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from adas.detector.coco_metrics import coco_metrics
from adas.detector.decoders import decode
from adas.detector.postprocess import Detections, box_iou, with_score_threshold
from adas.detector.preprocess import preprocess
from adas.intake.contract import Contract, Postprocess
from adas.packaging.config import EquivalenceConfig, PackagingConfig, PrecisionTolerance

if TYPE_CHECKING:
    from torch import nn

# COCO AP needs the low-score tail: the evaluation suite decodes at 0.05 too.
MAP_SCORE_THRESHOLD = 0.05
_HEAD_METRICS = ("max_abs", "mean_abs", "p99_abs", "max_rel", "mean_rel", "p99_rel")
_DECODE_METRICS = (
    "mean_iou_drift",
    "max_iou_drift",
    "mean_score_drift",
    "max_score_drift",
    "missing_fraction",
    "extra_fraction",
)


class Engine(Protocol):
    """What the check needs from an engine (``OrtEngine``, or a TensorRT runner): outputs of a
    placed batch, given the frames' source size for a model with a source-size input."""

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class HeadErrors:
    head: str
    max_abs: float
    mean_abs: float
    p99_abs: float
    max_rel: float
    mean_rel: float
    p99_rel: float
    values: int


@dataclass(frozen=True)
class DecodeDrift:
    frames: int
    reference_detections: int
    engine_detections: int
    matched: int
    mean_iou_drift: float
    max_iou_drift: float
    mean_score_drift: float
    max_score_drift: float
    missing: int
    extra: int
    missing_fraction: float
    extra_fraction: float
    borderline_unmatched: int
    score_threshold: float
    score_drift_outliers: int = 0  # matched detections beyond the tolerance's max_score_drift


@dataclass(frozen=True)
class EquivalenceReport:
    precision: str
    passed: bool
    failures: list[str]
    heads: dict[str, HeadErrors]
    decode: DecodeDrift
    random_inputs: int
    real_frames: int
    seed: int
    seconds: float
    tolerances: dict[str, Any] = field(default_factory=dict)

    def to_metadata(self) -> dict[str, Any]:
        return asdict(self)

    def markdown(self) -> str:
        rows = ["| head | " + " | ".join(_HEAD_METRICS) + " |", "|---|" + "---|" * len(_HEAD_METRICS)]
        for h in self.heads.values():
            rows.append(f"| {h.head} | " + " | ".join(f"{getattr(h, m):.3g}" for m in _HEAD_METRICS) + " |")
        d = self.decode
        rows.append("")
        rows.append(
            f"decode on {d.frames} real frames: {d.reference_detections} reference / {d.engine_detections} engine "
            f"detections, {d.matched} matched; IoU drift mean {d.mean_iou_drift:.3g} max {d.max_iou_drift:.3g}; "
            f"score drift mean {d.mean_score_drift:.3g} max {d.max_score_drift:.3g} "
            f"({d.score_drift_outliers} beyond the bound); missing {d.missing}, extra {d.extra}"
        )
        if self.failures:
            rows.append("")
            rows += [f"- FAIL {f}" for f in self.failures]
        return "\n".join(rows)


# --------------------------------------------------------------------------- inputs


def _normalized_bounds(contract: Contract) -> tuple[np.ndarray, np.ndarray]:
    n = contract.input.normalization
    mean, std = np.asarray(n.mean, np.float32), np.asarray(n.std, np.float32)
    lo = (0.0 * n.scale - mean) / std
    hi = (255.0 * n.scale - mean) / std
    return lo.reshape(1, 3, 1, 1), hi.reshape(1, 3, 1, 1)


def random_inputs(
    contract: Contract,
    n: int,
    frames_uint8: np.ndarray | None,
    config: EquivalenceConfig,
    rng: np.random.Generator,
    batch: int,
) -> list[np.ndarray]:
    """``n`` normalized inputs in batches: a ``uniform_fraction`` share of uniform noise over the
    normalized range, the rest real frames with random gain, offset and gaussian noise."""
    _, c, h, w = contract.input.shape
    lo, hi = _normalized_bounds(contract)
    have_frames = frames_uint8 is not None and len(frames_uint8) > 0
    n_uniform = n if not have_frames else round(n * config.uniform_fraction)
    batches: list[np.ndarray] = []
    for s in range(0, n, batch):
        k = min(batch, n - s)
        kinds = np.arange(s, s + k) < n_uniform
        x = np.empty((k, c, h, w), np.float32)
        if kinds.any():
            u = rng.random((int(kinds.sum()), c, h, w), dtype=np.float32)
            x[kinds] = lo + u * (hi - lo)
        if (~kinds).any():
            assert frames_uint8 is not None
            m = int((~kinds).sum())
            idx = rng.integers(0, len(frames_uint8), m)
            f = frames_uint8[idx].astype(np.float32)
            gain = rng.uniform(*config.perturb_gain, size=(m, 1, 1, 1)).astype(np.float32)
            off = rng.uniform(*config.perturb_offset, size=(m, 1, 1, 1)).astype(np.float32)
            noise = rng.standard_normal(f.shape, dtype=np.float32) * np.float32(config.perturb_noise_std)
            pert = np.clip(f * gain + off + noise, 0, 255).round().astype(np.uint8)
            x[~kinds] = preprocess(pert, contract.input)[0]
        batches.append(x)
    return batches


# --------------------------------------------------------------------------- running


def run_reference(
    module: nn.Module, x: np.ndarray, output_names: Sequence[str], source_hw: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """The PyTorch program's outputs keyed by contract name. ``source_hw`` is given only to an ONNX
    bundle's program whose contract declares a source-size input (a torch program takes the image
    alone: the contract allows that input for ONNX models only).

    The batch is handed over channels-last: oneDNN's convolutions run ~25% faster in that
    layout on CPU (measured, batch 50), and the reference pass is most of the check's time.
    Same program and weights; the results differ from NCHW by float rounding (~1e-6).
    """
    import torch

    with torch.inference_mode():
        batch = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
        outs = module(batch) if source_hw is None else module(batch, source_hw)
    if isinstance(outs, dict):  # an ONNX bundle's program (adas.intake.model.OnnxProgram)
        outs = [outs[n] for n in output_names]
    outs = outs if isinstance(outs, (tuple, list)) else [outs]
    return {n: o.detach().cpu().numpy() for n, o in zip(output_names, outs, strict=True)}


class ModuleReference:
    """A torch module in this process as an :class:`Engine` (trusted models only: packaging runs
    a candidate's program in the sandbox instead)."""

    def __init__(self, module: nn.Module, output_names: Sequence[str]) -> None:
        self.module = module.eval()
        self.output_names = list(output_names)

    def run(self, x: np.ndarray, source_hw: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
        return run_reference(self.module, x, self.output_names)  # a torch module: the image only


# A heatmap head's tensors are logits and sizes of one scale each, which the per-head tolerances in
# config/packaging.yaml describe. A dense tensor packs box pixels (0-512) with probabilities in one
# array: elementwise tolerances mean nothing there (the vehicle-dense INT8 engine: max_abs 12.7 px
# on boxes at a 0.12 mAP gain), so it is judged, like the self-decoding kinds, by its decoded boxes.
RAW_HEAD_KINDS = ("heatmap",)


def raw_head_outputs(contract: Contract) -> list[str]:
    """The outputs compared raw, elementwise: all of them for a heatmap head; none for the other
    kinds, whose equivalence is their decoded boxes (and the task mAP)."""
    if contract.postprocess.kind in RAW_HEAD_KINDS:
        return [o.name for o in contract.outputs]
    return []


class _HeadAccumulator:
    def __init__(self) -> None:
        self.abs: list[np.ndarray] = []
        self.rel: list[np.ndarray] = []

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            raise ValueError(f"engine output shape {got.shape} differs from reference {ref.shape}")
        err = np.abs(got.astype(np.float32) - ref.astype(np.float32)).reshape(-1)
        scale = max(float(np.max(np.abs(ref))), 1e-12)
        self.abs.append(err)
        self.rel.append(err / np.float32(scale))

    def result(self, head: str) -> HeadErrors:
        a, r = np.concatenate(self.abs), np.concatenate(self.rel)
        if not np.all(np.isfinite(a)):  # NaN/inf in the engine output: worst possible error
            a, r = np.nan_to_num(a, nan=np.inf), np.nan_to_num(r, nan=np.inf)
        return HeadErrors(
            head=head,
            max_abs=float(a.max()),
            mean_abs=float(a.mean(dtype=np.float64)),
            p99_abs=float(np.percentile(a, 99)),
            max_rel=float(r.max()),
            mean_rel=float(r.mean(dtype=np.float64)),
            p99_rel=float(np.percentile(r, 99)),
            values=int(a.size),
        )


def match_detections(
    ref: Detections, got: Detections, match_iou: float
) -> tuple[list[tuple[int, int, float]], np.ndarray, np.ndarray]:
    """Greedy one-to-one matching by IoU within a class: (matches [(i_ref, i_got, iou)],
    unmatched reference indices, unmatched engine indices)."""
    matches: list[tuple[int, int, float]] = []
    if len(ref) and len(got):
        iou = box_iou(ref.boxes, got.boxes)
        iou[ref.category_ids[:, None] != got.category_ids[None, :]] = -1.0
        order = np.dstack(np.unravel_index(np.argsort(-iou, axis=None), iou.shape))[0]
        used_r: set[int] = set()
        used_g: set[int] = set()
        for i, j in order:
            v = float(iou[i, j])
            if v < match_iou:
                break
            if i in used_r or j in used_g:
                continue
            used_r.add(int(i))
            used_g.add(int(j))
            matches.append((int(i), int(j), v))
    mr = {m[0] for m in matches}
    mg = {m[1] for m in matches}
    return (
        matches,
        np.array([i for i in range(len(ref)) if i not in mr], np.int64),
        np.array([j for j in range(len(got)) if j not in mg], np.int64),
    )


def compare_detections(
    ref: Sequence[Detections], got: Sequence[Detections], post: Postprocess, tol: PrecisionTolerance
) -> DecodeDrift:
    dt = tol.decode
    ious: list[float] = []
    dscores: list[float] = []
    missing = extra = borderline = 0
    border = post.score_threshold + dt.score_margin
    for r, g in zip(ref, got, strict=True):
        matches, ur, ug = match_detections(r, g, dt.match_iou)
        for i, j, v in matches:
            ious.append(1.0 - v)
            dscores.append(abs(float(r.scores[i]) - float(g.scores[j])))
        ur_border = int(np.sum(r.scores[ur] < border)) if ur.size else 0
        ug_border = int(np.sum(g.scores[ug] < border)) if ug.size else 0
        borderline += ur_border + ug_border
        missing += int(ur.size) - ur_border
        extra += int(ug.size) - ug_border
    n_ref = sum(len(r) for r in ref)
    denom = max(n_ref, 1)
    return DecodeDrift(
        frames=len(ref),
        reference_detections=n_ref,
        engine_detections=sum(len(g) for g in got),
        matched=len(ious),
        mean_iou_drift=float(np.mean(ious)) if ious else 0.0,
        max_iou_drift=float(np.max(ious)) if ious else 0.0,
        mean_score_drift=float(np.mean(dscores)) if dscores else 0.0,
        max_score_drift=float(np.max(dscores)) if dscores else 0.0,
        missing=missing,
        extra=extra,
        missing_fraction=missing / denom if missing else 0.0,
        extra_fraction=extra / denom if extra else 0.0,
        borderline_unmatched=borderline,
        score_threshold=post.score_threshold,
        score_drift_outliers=int(np.sum(np.asarray(dscores) > dt.max_score_drift)) if dscores else 0,
    )


def _outliers_allowed(drift: DecodeDrift, fraction: float) -> bool:
    """At most ``fraction`` of the matched detections beyond the score-drift bound (and none when
    nothing was matched)."""
    return drift.matched > 0 and drift.score_drift_outliers <= fraction * drift.matched


def tolerance_failures(
    heads: dict[str, HeadErrors], drift: DecodeDrift, tol: PrecisionTolerance
) -> list[str]:
    """What the per-head errors and the decode drift exceed in ``tol``, one line each (empty: pass)."""
    out = []
    for name, h in heads.items():
        t = tol.head(name)
        for m in _HEAD_METRICS:
            v, bound = getattr(h, m), getattr(t, m)
            if not v <= bound:  # NaN fails too
                out.append(f"head '{name}': {m} {v:.4g} > tolerance {bound:.4g}")
    dt = tol.decode
    bounds = {
        "mean_iou_drift": dt.mean_iou_drift,
        "max_iou_drift": dt.max_iou_drift,
        "mean_score_drift": dt.mean_score_drift,
        "max_score_drift": dt.max_score_drift,
        "missing_fraction": dt.max_missing_fraction,
        "extra_fraction": dt.max_extra_fraction,
    }
    for m in _DECODE_METRICS:
        v = getattr(drift, m)
        if v <= bounds[m]:
            continue
        where = f"after NMS, {drift.frames} real frames"
        if m == "max_score_drift" and dt.score_drift_outlier_fraction > 0:
            if _outliers_allowed(drift, dt.score_drift_outlier_fraction):
                continue
            where += (
                f"; {drift.score_drift_outliers} of {drift.matched} matched detections beyond it, "
                f"{dt.score_drift_outlier_fraction:.2%} allowed"
            )
        out.append(f"decode: {m} {v:.4g} > tolerance {bounds[m]:.4g} ({where})")
    return out


def check_equivalence(
    reference: Engine,
    engine: Engine,
    contract: Contract,
    config: PackagingConfig | EquivalenceConfig,
    precision: str,
    frames_uint8: np.ndarray | None,
    rng_seed: int = 0,
) -> EquivalenceReport:
    """Compare ``engine`` with ``reference`` (the bundle's PyTorch program, eager FP32).

    ``frames_uint8``: real validation frames [N, H, W, 3] (decode comparison and seeds of the
    perturbed inputs); may be None or empty, then only uniform noise is used and the decode
    level is vacuous.
    """
    t0 = time.perf_counter()
    cfg = config.equivalence if isinstance(config, PackagingConfig) else config
    tol = cfg.for_precision(precision)
    names = raw_head_outputs(contract)
    rng = np.random.default_rng(rng_seed)
    frames = None if frames_uint8 is None or len(frames_uint8) == 0 else np.asarray(frames_uint8)
    acc = {n: _HeadAccumulator() for n in names}

    def compare(
        x: np.ndarray, source_hw: tuple[int, int] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        ref, got = reference.run(x, source_hw), engine.run(x, source_hw)
        for n in names:
            acc[n].add(ref[n], got[n])
        return ref, got

    for x in random_inputs(contract, cfg.num_random_inputs, frames, cfg, rng, cfg.batch_size):
        compare(x)
    post = with_score_threshold(contract.postprocess, cfg.decode_score_threshold)
    class_ids = [c.id for c in contract.classes]
    ref_dets: list[Detections] = []
    got_dets: list[Detections] = []
    if frames is not None:
        for s in range(0, len(frames), cfg.batch_size):
            x, geometry = preprocess(frames[s : s + cfg.batch_size], contract.input)
            ref, got = compare(x, geometry.source_hw)
            ref_dets += decode(ref, post, class_ids, geometry=geometry)
            got_dets += decode(got, post, class_ids, geometry=geometry)
    heads = {n: acc[n].result(n) for n in names}
    drift = compare_detections(ref_dets, got_dets, post, tol)
    failures = tolerance_failures(heads, drift, tol)
    return EquivalenceReport(
        precision=precision,
        passed=not failures,
        failures=failures,
        heads=heads,
        decode=drift,
        random_inputs=cfg.num_random_inputs,
        real_frames=0 if frames is None else len(frames),
        seed=rng_seed,
        seconds=time.perf_counter() - t0,
        tolerances=tol.model_dump(),
    )


# --------------------------------------------------------------------------- task metric


def _detections(
    run: Any, frames: np.ndarray, contract: Contract, post: Postprocess, batch: int
) -> list[Detections]:
    class_ids = [c.id for c in contract.classes]
    out: list[Detections] = []
    for s in range(0, len(frames), batch):
        x, geometry = preprocess(frames[s : s + batch], contract.input)
        out += decode(run(x, geometry.source_hw), post, class_ids, geometry=geometry)
    return out


def task_map_drop(
    reference: Engine,
    engine: Engine,
    contract: Contract,
    coco_gt: dict[str, Any],
    image_ids: Sequence[int],
    frames: np.ndarray,
    score_threshold: float | None = MAP_SCORE_THRESHOLD,
    batch_size: int = 32,
) -> tuple[float, float, float]:
    """COCO mAP@[.5:.95] of the reference and the engine on ``frames`` (aligned with
    ``image_ids``; boxes of ``coco_gt`` in the frames' pixels), in points (0-100):
    ``(ap_reference, ap_engine, ap_reference - ap_engine)``.

    Detections go through the contract's decode with ``score_threshold`` in place of the
    contract's operating threshold (None keeps the contract's): COCO AP integrates over the
    low-score tail, so the default is the evaluation suite's 0.05 (config/evaluation.yaml).
    """
    if len(image_ids) != len(frames):
        raise ValueError(f"{len(image_ids)} image ids for {len(frames)} frames")
    post = with_score_threshold(contract.postprocess, score_threshold)
    aps = []
    for run in (reference.run, engine.run):
        dets = _detections(run, np.asarray(frames), contract, post, batch_size)
        records = [r for i, d in zip(image_ids, dets, strict=True) for r in d.to_coco(int(i))]
        ap = coco_metrics(coco_gt, records, image_ids=[int(i) for i in image_ids])["AP"]
        if ap < 0:
            raise ValueError("mAP is undefined: the selected images have no ground-truth boxes")
        aps.append(100.0 * ap)
    return aps[0], aps[1], aps[0] - aps[1]


def map_drop_failure(
    drop_points: float, config: PackagingConfig | EquivalenceConfig, precision: str
) -> str | None:
    """The failure sentence when the mAP drop exceeds the precision's bound, else None."""
    cfg = config.equivalence if isinstance(config, PackagingConfig) else config
    bound = cfg.for_precision(precision).max_map_drop_points
    if bound is not None and not drop_points <= bound:
        return f"task: mAP@[.5:.95] drop {drop_points:.2f} points > tolerance {bound:.2f} ({precision})"
    return None
