"""Assemble a model pack: files, serving container context, SBOM, scans, signatures, report.

A pack is complete only when its ``pack_manifest.json`` exists: it is stored last, after every
file and the manifest's signature, and lists each file with its sha256 (signed: see
:mod:`adas.packaging.signing`). A failure before that leaves no manifest, so a partial pack can
never look complete; packs are write-once (:mod:`adas.packaging.publish`).
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from adas.config_errors import load_yaml_model
from adas.intake.contract import Contract, Lineage
from adas.settings import CONFIG_DIR

SERVING_FILE = CONFIG_DIR / "serving.yaml"
EXPORT_REPORT_FILE = "export_report.json"


class BaseImage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    repository: str
    tag: str
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    image_name: str = Field(pattern=r"^[a-z0-9][a-z0-9._/-]*$")
    base_image: BaseImage


def load_serving_config(path: Path = SERVING_FILE) -> ServingConfig:
    return load_yaml_model(path, ServingConfig)


def container_tag(config: ServingConfig, contract: Contract, lineage: Lineage) -> str:
    """``adas-detector:<semver>-<sha7>`` (``+`` build metadata is not valid in a tag)."""
    return f"{config.image_name}:{contract.version.replace('+', '_')}-{lineage.git_sha[:7]}"


def write_container_context(out_dir: Path, config: ServingConfig, tag: str, runtime: str) -> dict[str, Any]:
    """Dockerfile + README for the serving image; the model repository sits beside it in the pack."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = config.base_image
    pinned = base.digest is not None
    if pinned:
        from_line = f"FROM {base.repository}:{base.tag}@{base.digest}"
        arg_line = ""
    else:
        # No default: `docker build` fails unless the digest is given, so nothing unpinned ships.
        arg_line = "ARG BASE_IMAGE_DIGEST\n"
        from_line = f"FROM {base.repository}:{base.tag}@${{BASE_IMAGE_DIGEST}}"
    backend_note = (
        "onnxruntime backend (CPU)"
        if runtime == "onnxruntime"
        else "tensorrt backend (GPU, strongly typed plan)"
    )
    (out_dir / "Dockerfile").write_text(
        f"""# Serving image for {tag}: Triton Inference Server with the pack's model repository.
{arg_line}{from_line}
LABEL org.opencontainers.image.title="{tag.split(":")[0]}" \\
      org.opencontainers.image.version="{tag.split(":")[1]}"
COPY triton/ /models/
# Inference runs through the {backend_note}; pre/post-processing are python-backend models.
ENTRYPOINT ["tritonserver", "--model-repository=/models", "--disable-auto-complete-config"]
"""
    )
    build_arg = "" if pinned else " --build-arg BASE_IMAGE_DIGEST=sha256:<digest of the base image>"
    (out_dir / "README.md").write_text(
        f"""# Serving container build context

Intended tag: `{tag}`. Building and pushing is your CI's job (ECR or any registry):

```bash
cp -r ../triton ./triton   # the pack's model repository
docker build{build_arg} -t {tag} .
docker push <registry>/{tag}
```

Base image: `{base.repository}:{base.tag}` {"pinned by digest " + str(base.digest) if pinned else "NOT pinned in config/serving.yaml: the build requires BASE_IMAGE_DIGEST"}.
"""
    )
    return {
        "tag": tag,
        "base_image": f"{base.repository}:{base.tag}",
        "base_image_digest": base.digest,
        "pinned": pinned,
    }


def build_export_report(
    *,
    contract: Contract,
    lineage: Lineage,
    device: str,
    precision: str,
    runtime: str,
    engine_build: dict[str, Any],
    export_details: dict[str, Any] | None,
    coverage: dict[str, Any],
    environment: dict[str, Any],
    equivalence: dict[str, Any] | None,
    latency: dict[str, Any] | None,
    contract_smoke: dict[str, Any] | None,
    security: dict[str, Any],
    container: dict[str, Any],
    files: dict[str, str],
) -> dict[str, Any]:
    """``export_report.json``: flags, precisions, operator sets, versions, hashes, checks."""
    return {
        "schema_version": 1,
        "generated_at": datetime.now(UTC).isoformat(),
        "model": {"task": contract.task, "name": contract.model_name, "version": contract.version},
        "lineage": lineage.model_dump(mode="json"),
        "target": {"device": device, "precision": precision, "runtime": runtime},
        "export": export_details or {},
        "engine_build": engine_build,
        "operator_coverage": coverage,
        "environment": environment,
        "equivalence": equivalence,
        "latency": latency,
        "contract_smoke": contract_smoke,
        "security": security,
        "container": container,
        "files": files,
    }


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)
    return path


def copy_into(pack_dir: Path, name: str, src: Path) -> Path:
    dest = pack_dir / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        shutil.copyfile(src, dest)
    return dest
