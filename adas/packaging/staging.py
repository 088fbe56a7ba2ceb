"""Repo staging: pin the environment, verify every bundle hash, smoke-forward the checkpoint
(in the sandbox: :func:`adas.packaging.sandboxed_model.stage_in_sandbox`)."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adas.intake.refs import CandidateRef
from adas.intake.stored import stored_file
from adas.packaging.refs import StagedRef, model_prefix
from adas.packaging.sandboxed_model import stage_in_sandbox
from adas.storage import ArtifactStore

# Versions recorded in every pack; the rest of the environment is in requirements.lock.
PINNED_PACKAGES = ("torch", "onnx", "onnxruntime", "numpy", "dagster", "tritonclient", "tensorrt")


@dataclass(frozen=True)
class StagedCheckpoint:
    bundle_dir: Path
    environment: dict[str, Any]
    requirements_lock: str
    parameter_count: int
    output_ranges: dict[str, tuple[float, float]]


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def pin_environment() -> dict[str, Any]:
    """What this build ran on: interpreter, packages, CPU, CUDA / TensorRT where present."""
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "packages": {name: _version(name) for name in PINNED_PACKAGES},
        # Set by the production image build; a local run has no container.
        "image_digest": os.environ.get("ADAS_IMAGE_DIGEST", "local (no container image)"),
    }
    import torch

    env["cuda"] = {
        "torch_cuda": torch.version.cuda,
        "available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
    }
    env["tensorrt_importable"] = importlib.util.find_spec("tensorrt") is not None
    return env


def freeze_requirements() -> str:
    """``requirements.lock`` of the running interpreter (``name==version``, sorted, deduplicated)."""
    pins = {}
    for dist in md.distributions():
        name = dist.metadata.get("Name")
        if name:
            pins[name.lower()] = f"{name}=={dist.version}"
    return "\n".join(pins[k] for k in sorted(pins)) + "\n"


def stage_checkpoint(store: ArtifactStore, candidate: CandidateRef, seed: int = 0) -> StagedCheckpoint:
    """Fetch every bundle file verifying its sha256, then, in the sandbox, check the weights and
    forward zero and random batches.

    Raises :class:`BundleRejected` naming the weight, output or attempt at fault (NaN/Inf, a write
    outside the sandbox), or ``ArtifactIntegrityError`` naming the file whose hash does not match
    intake's record.
    """
    local = {name: store.fetch(f.key, expected_sha256=f.sha256) for name, f in candidate.files.items()}
    bundle_dir = local[candidate.contract.model_file].parent
    staged = stage_in_sandbox(bundle_dir, candidate.contract, seed)
    return StagedCheckpoint(
        bundle_dir, pin_environment(), freeze_requirements(), staged.parameter_count, staged.output_ranges
    )


@dataclass(frozen=True)
class StagingOutcome:
    ref: StagedRef
    staged: StagedCheckpoint


def stage_candidate(store: ArtifactStore, candidate: CandidateRef) -> StagingOutcome:
    """:func:`stage_checkpoint`, then ``requirements.lock`` and ``environment.json`` stored under
    ``models/<task>/<version>/staging/``."""
    staged = stage_checkpoint(store, candidate)
    c = candidate.contract
    prefix = f"{model_prefix(c.task, c.version)}/staging"
    lock = stored_file(store, f"{prefix}/requirements.lock", data=staged.requirements_lock.encode())
    env = stored_file(
        store, f"{prefix}/environment.json", data=json.dumps(staged.environment, indent=2).encode()
    )
    return StagingOutcome(StagedRef(candidate=candidate, requirements_lock=lock, environment=env), staged)
