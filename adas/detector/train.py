"""Training loop of the demo detectors (CPU, 2 threads, deterministic), one loop for both families.

``family: centernet`` (``adas.detector.model``) and ``family: dense`` (``adas.detector.dense_model``,
its assignment and loss in ``adas.detector.dense_train``) share the data, the optimizer, the
schedule and the validation (through the bundle's own contract and decoder).

CenterNet's losses: penalty-reduced focal loss on the heatmap, and at object centres an
L1 on the sub-cell offset and a *relative* L1 (``|pred - gt| / gt``) on the box size: the
boxes are small (motorcycles ~8x4 px), and a relative error tracks IoU far better than an
absolute pixel error, without needing a log/exp op in the exported graph.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from adas.detector.bundle import build_contract, run_detector
from adas.detector.coco_metrics import coco_metrics
from adas.detector.data import CenterNetDataset, CocoFrames, estimate_normalization
from adas.detector.dense_bundle import PAD_VALUE, build_dense_contract
from adas.detector.dense_model import DenseDetector, build_dense_model
from adas.detector.dense_train import LetterboxDataset, collate, dense_loss
from adas.detector.model import build_model, count_parameters
from adas.intake.contract import Contract, Normalization

Family = Literal["centernet", "dense"]

# Score threshold used for the validation AP printed during training (AP is measured over the
# whole precision/recall curve, so it wants a low threshold; the bundle's operating threshold
# is a separate choice made when the bundle is written).
VAL_SCORE_THRESHOLD = 0.05


@dataclass
class TrainConfig:
    data_dir: Path
    epochs: int = 20
    width: int = 16
    seed: int = 0
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    num_threads: int = 2
    max_train_images: int | None = None
    max_val_images: int | None = None
    eval_every: int = 0  # epochs between validation APs (0: only at the end)
    size_weight: float = 1.0
    offset_weight: float = 1.0
    family: Family = "centernet"


@dataclass
class TrainResult:
    model: nn.Module
    normalization: Normalization
    classes: list[tuple[int, str]]
    dataset_tag: str
    train_seconds: float
    val_metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    params: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, num_pos: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha=2, beta=4) on logits, /num objects."""
    pos = target.ge(1.0 - 1e-4).float()
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    p = log_p.exp()
    pos_loss = -((1 - p) ** 2) * log_p * pos
    neg_loss = -((1 - target) ** 4) * p**2 * log_not_p * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / num_pos


def detection_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: dict[str, torch.Tensor],
    size_weight: float = 1.0,
    offset_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    heat, size, offset = outputs
    mask = targets["mask"].unsqueeze(1)  # [B, 1, h, w]
    num_pos = mask.sum().clamp(min=1.0)
    hm = focal_loss(heat, targets["heatmap"], num_pos)
    gt_size = targets["box_size"]
    sz = ((size - gt_size).abs() / gt_size.clamp(min=1.0) * mask).sum() / num_pos
    off = ((offset - targets["offset"]).abs() * mask).sum() / num_pos
    total = hm + size_weight * sz + offset_weight * off
    return {"loss": total, "heatmap": hm, "size": sz, "offset": off}


def read_dataset_info(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "dataset.json"
    return json.loads(path.read_text()) if path.exists() else {}


def dataset_classes(train: CocoFrames) -> list[tuple[int, str]]:
    """(id, name) of the training manifest's categories, sorted by id: heatmap channel order."""
    return sorted((int(c["id"]), str(c["name"])) for c in train.coco["categories"])


def family_contract(
    family: Family,
    model: nn.Module,
    normalization: Normalization,
    classes: list[tuple[int, str]],
    score_threshold: float,
) -> Contract:
    """The contract a bundle of this family would carry (validation decodes through it)."""
    common = {"version": "0.0.0", "model_name": "eval", "task": "eval", "normalization": normalization}
    if family == "dense":
        assert isinstance(model, DenseDetector)
        return build_dense_contract(
            **common,
            classes=classes,
            num_candidates=model.config.num_candidates,
            score_threshold=score_threshold,
        )
    return build_contract(**common, classes=classes, score_threshold=score_threshold)


def evaluate_model(
    model: nn.Module,
    frames: CocoFrames,
    normalization: Normalization,
    classes: list[tuple[int, str]],
    score_threshold: float = VAL_SCORE_THRESHOLD,
    family: Family = "centernet",
) -> dict[str, Any]:
    contract = family_contract(family, model, normalization, classes, score_threshold)
    dets = run_detector(model, frames.frames, contract)
    records = [r for image_id, d in zip(frames.image_ids, dets, strict=True) for r in d.to_coco(image_id)]
    return coco_metrics(frames.coco, records)


def train(config: TrainConfig, log: Callable[[str], None] = print) -> TrainResult:
    torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)
    data_dir = Path(config.data_dir)
    info = read_dataset_info(data_dir)
    t_load = time.perf_counter()
    train_frames = CocoFrames.load(data_dir / "golden_train.json", data_dir, limit=config.max_train_images)
    val_frames = CocoFrames.load(data_dir / "golden_val.json", data_dir, limit=config.max_val_images)
    classes = dataset_classes(train_frames)
    class_ids = [c for c, _ in classes]
    normalization = estimate_normalization(train_frames.frames, seed=config.seed)
    log(
        f"loaded {len(train_frames.image_ids)} train / {len(val_frames.image_ids)} val frames "
        f"in {time.perf_counter() - t_load:.1f}s; classes {classes}; normalization {normalization.model_dump()}"
    )

    gen = torch.Generator().manual_seed(config.seed)
    model: nn.Module
    if config.family == "dense":
        model = build_dense_model(num_classes=len(classes), width=config.width)
        letterboxed = LetterboxDataset(
            train_frames,
            class_ids,
            normalization,
            model.config.input_hw,
            PAD_VALUE,
            augment=True,
            seed=config.seed,
        )
        loader = DataLoader(
            letterboxed,
            batch_size=config.batch_size,
            shuffle=True,
            drop_last=True,
            generator=gen,
            collate_fn=collate,
        )
    else:
        model = build_model(num_classes=len(classes), width=config.width)
        dataset = CenterNetDataset(train_frames, class_ids, normalization, augment=True, seed=config.seed)
        loader = DataLoader(
            dataset, batch_size=config.batch_size, shuffle=True, drop_last=True, generator=gen
        )
    log(f"{config.family} model width {config.width}: {count_parameters(model):,} parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total_steps = max(1, config.epochs * len(loader))
    warmup = min(config.warmup_steps, total_steps // 5)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total_steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        sums: dict[str, float] = {}
        t_ep = time.perf_counter()
        for x, targets in loader:
            if isinstance(model, DenseDetector):
                losses = dense_loss(model, *model.forward_train(x), targets)
            else:
                losses = detection_loss(model(x), targets, config.size_weight, config.offset_weight)
            opt.zero_grad(set_to_none=True)
            losses["loss"].backward()
            # Rare crowded batches give large early focal gradients; clipping keeps AdamW calm.
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            sched.step()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
        n = max(1, len(loader))
        row = {
            "epoch": float(epoch),
            **{k: v / n for k, v in sums.items()},
            "seconds": time.perf_counter() - t_ep,
        }
        parts = " ".join(f"{k} {v / n:.3f}" for k, v in sums.items() if k != "loss")
        msg = (
            f"epoch {epoch}/{config.epochs} loss {row['loss']:.3f} ({parts}) "
            f"lr {sched.get_last_lr()[0]:.2e} {row['seconds']:.0f}s"
        )
        if config.eval_every and epoch % config.eval_every == 0 and epoch != config.epochs:
            m = evaluate_model(model, val_frames, normalization, classes, family=config.family)
            row["val_AP"], row["val_AP50"] = m["AP"], m["AP50"]
            msg += f" | val AP {100 * m['AP']:.1f} AP50 {100 * m['AP50']:.1f} " + ", ".join(
                f"{k} {100 * v:.1f}" for k, v in m["per_class_AP"].items()
            )
        history.append(row)
        log(msg)
    train_seconds = time.perf_counter() - t0
    model.eval()
    val = evaluate_model(model, val_frames, normalization, classes, family=config.family)
    log(
        f"trained {config.epochs} epochs in {train_seconds:.0f}s; val AP {100 * val['AP']:.1f} "
        f"AP50 {100 * val['AP50']:.1f} AP75 {100 * val['AP75']:.1f}; per class "
        + ", ".join(f"{k} {100 * v:.1f}" for k, v in val["per_class_AP"].items())
    )
    return TrainResult(
        model=model,
        normalization=normalization,
        classes=classes,
        dataset_tag=str(info.get("tag") or data_dir.name),
        train_seconds=train_seconds,
        val_metrics=val,
        history=history,
        params=count_parameters(model),
    )


def config_summary(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["data_dir"] = str(config.data_dir)
    return d
