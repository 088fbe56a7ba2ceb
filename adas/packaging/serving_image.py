"""The serving image (Triton base + the model repository layer), built and pushed at publication
where a base is pinned and reachable; otherwise one line saying why not (#14 item 5).

The base is ``config/serving.yaml``'s ``base_image``, used only when pinned by digest. No Docker
daemon and no unpacking: the image is the base's manifest (its ``linux/<arch>`` image when it is
an index) plus one uncompressed layer holding the Triton repository at ``/models`` (the
repository as the pinned pack artifact's verified pull installs it, written by the pack's
deterministic layer writer), a config extended with that layer, the command and OCI labels, all
pushed with Distribution API calls to ``<task>/<model>/serving:<version>-<device>-<precision>-<sha7>``.
The base's layers are mounted (same registry) or streamed by digest (another registry, read
anonymously: our credentials go only to our registry). The same base and pack give the same
image digest.

The issue named buildah or umoci. Debian's umoci 0.4.7 writes layer tars without their
end-of-archive blocks (``tar -t``: "Unexpected EOF"; checked on this stack), and buildah needs
container storage that copies the whole base rootfs; neither is needed to append one layer.

No base pinned, the base unreachable (naming the error) or not found: nothing is built and the
line says which; the pack artifact is what is published.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adas.packaging.oci import write_layer_tar
from adas.packaging.oci_client import OciError, RegistryClient, blob_digest
from adas.packaging.pack import BaseImage
from adas.storage import sha256_file

_DOCKER_HUB = "registry-1.docker.io"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
_MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json, "
    "application/vnd.docker.distribution.manifest.v2+json"
)
OCI_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
_IMAGE_MANIFESTS = (OCI_IMAGE_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json")
# Docker schema 2 layer types as their OCI equivalents (same bytes, same digests).
_OCI_LAYER = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
}
MODELS_DIR = "/models"
SERVING_SUFFIX = "serving"


class ServingImageError(OciError):
    """A pinned, reachable base could not be turned into the serving image; names the step."""


@dataclass(frozen=True)
class ServingImage:
    line: str  # the publication report's one line
    reference: str | None = None  # host/repository@sha256:... when built
    tag: str | None = None


def base_location(base: BaseImage) -> tuple[str, str]:
    """(registry URL, repository) of an image name as Docker reads it: the first component is a
    host when it has a dot, a port or is localhost; else Docker Hub (``library/`` for one name)."""
    first, _, rest = base.repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        scheme = "http" if first.split(":")[0] in _LOOPBACK or first.startswith("[::1]") else "https"
        return f"{scheme}://{first}", rest
    return f"https://{_DOCKER_HUB}", base.repository if rest else f"library/{base.repository}"


def why_not_built(base: BaseImage, timeout_s: float = 5.0) -> str | None:
    """Why no serving image can be built from ``base`` (None: pinned and reachable). Anonymous
    probe: our registry's credentials are never sent to the base's."""
    if base.digest is None:
        return "no base image pinned by digest in config/serving.yaml"
    name = f"{base.repository}@{base.digest}"
    url, repository = base_location(base)
    try:
        found = RegistryClient(url, None, timeout_s).manifest_digest(
            repository, base.digest, accept=_MANIFEST_TYPES
        )
    except OciError as exc:
        return f"base {name} unreachable ({exc})"
    if found is None:
        return f"base {name} not found in {url}"
    return None


def not_built_line(reason: str, published: str) -> str:
    """The report's line when no image is built: why, and the pack artifact published instead."""
    return f"serving image: none built, {reason}; the pack artifact {published} is what is published"


def serving_image_line(base: BaseImage, published: str, timeout_s: float = 5.0) -> str:
    """:func:`not_built_line` for ``base`` as it stands now (probed)."""
    return not_built_line(why_not_built(base, timeout_s) or "not requested", published)


def _base_manifest(
    source: RegistryClient, base_repo: str, base: BaseImage, arch: str
) -> tuple[str, dict[str, Any]]:
    """The base's image manifest for ``linux/<arch>`` (through its index when it is one),
    every manifest checked against the digest it was asked by."""
    name = f"{base.repository}@{base.digest}"
    digest = str(base.digest)
    for _ in range(2):
        data = source.get_manifest(base_repo, digest, accept=_MANIFEST_TYPES)
        if blob_digest(data) != digest:
            raise ServingImageError(
                f"serving image: base {name}: the registry sent manifest {blob_digest(data)} for {digest}"
            )
        manifest = json.loads(data)
        if manifest.get("mediaType", OCI_IMAGE_MANIFEST) in _IMAGE_MANIFESTS and "config" in manifest:
            return digest, manifest
        matches = [
            m["digest"]
            for m in manifest.get("manifests") or []
            if (m.get("platform") or {}).get("os") == "linux"
            and (m.get("platform") or {}).get("architecture") == arch
        ]
        if not matches:
            raise ServingImageError(f"serving image: base {name} has no linux/{arch} image")
        digest = matches[0]
    raise ServingImageError(f"serving image: base {name}: an index inside an index")


def _copy_blob(
    source: RegistryClient,
    base_repo: str,
    client: RegistryClient,
    repository: str,
    digest: str,
    size: int,
    workdir: Path,
) -> None:
    """Make ``digest`` exist in ``repository``: already there, mounted within the registry, or
    streamed from the base's registry and checked against its digest on the way."""
    if client.blob_exists(repository, digest):
        return
    if source.url == client.url and client.mount_blob(repository, digest, base_repo):
        return
    blob = workdir / "blob"
    actual, got = source.get_blob(base_repo, digest, blob)
    if actual != digest or got != size:
        raise ServingImageError(
            f"serving image: base layer {digest} refused: the registry sent {actual} ({got} bytes)"
        )
    client.upload_blob(repository, digest, blob, size)
    blob.unlink()


def build_serving_image(
    base: BaseImage,
    model_repository: Path,
    client: RegistryClient,
    repository: str,
    tag: str,
    labels: dict[str, str],
    created: datetime,
    workdir: Path,
    arch: str = "amd64",
) -> ServingImage:
    """``base`` (its ``linux/<arch>`` image) + one layer holding ``model_repository`` at
    ``/models``, pushed as ``repository:tag`` to ``client``'s registry; its digest.

    The image is assembled with Distribution API calls: the base's layers are mounted or copied
    by digest (never unpacked), the new layer is a deterministic tar (the pack's layer writer),
    the config is the base's with that layer's diff id, a history entry, the command and labels.
    So the same base and pack give the same image digest."""
    if base.digest is None:
        raise ServingImageError("serving image: the base image is not pinned by digest")
    url, base_repo = base_location(base)
    source = client if url == client.url else RegistryClient(url, None)
    _, manifest = _base_manifest(source, base_repo, base, arch)
    config_desc = manifest["config"]
    config_blob = workdir / "base-config.json"
    actual, _ = source.get_blob(base_repo, config_desc["digest"], config_blob)
    if actual != config_desc["digest"]:
        raise ServingImageError(f"serving image: base config refused: the registry sent {actual}")
    config = json.loads(config_blob.read_bytes())

    files = {
        f"{MODELS_DIR.strip('/')}/{p.relative_to(model_repository).as_posix()}": (p, sha256_file(p)[0])
        for p in sorted(model_repository.rglob("*"))
        if p.is_file()
    }
    layer_path = workdir / "models.tar"
    layer_digest, layer_size = write_layer_tar(files, layer_path)
    stamp = created.isoformat()
    config.setdefault("rootfs", {"type": "layers", "diff_ids": []})["diff_ids"].append(layer_digest)
    config.setdefault("history", []).append({"created": stamp, "created_by": f"adas publish: {MODELS_DIR}"})
    image_config = config.setdefault("config", {})
    image_config["Cmd"] = ["tritonserver", f"--model-repository={MODELS_DIR}"]
    image_config["Labels"] = {**(image_config.get("Labels") or {}), **labels}
    config["created"] = stamp
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()

    layers = [
        {**layer, "mediaType": _OCI_LAYER.get(layer["mediaType"], layer["mediaType"])}
        for layer in manifest["layers"]
    ]
    for layer in layers:
        _copy_blob(source, base_repo, client, repository, layer["digest"], layer["size"], workdir)
    for digest, blob, size in (
        (layer_digest, layer_path, layer_size),
        (blob_digest(config_bytes), config_bytes, len(config_bytes)),
    ):
        if not client.blob_exists(repository, digest):
            client.upload_blob(repository, digest, blob, size)
    image = {
        "schemaVersion": 2,
        "mediaType": OCI_IMAGE_MANIFEST,
        "config": {
            "mediaType": OCI_IMAGE_CONFIG,
            "digest": blob_digest(config_bytes),
            "size": len(config_bytes),
        },
        "layers": [*layers, {"mediaType": OCI_LAYER_TAR, "digest": layer_digest, "size": layer_size}],
        "annotations": {k: v for k, v in labels.items() if k.startswith("org.opencontainers.image.")},
    }
    data = json.dumps(image, sort_keys=True, separators=(",", ":")).encode()
    digest = client.put_manifest(repository, tag, data) or blob_digest(data)
    if digest != blob_digest(data):
        raise ServingImageError(
            f"serving image: {repository}:{tag} stored as {digest}, expected {blob_digest(data)}"
        )
    reference = f"{client.host}/{repository}@{digest}"
    line = (
        f"serving image: built {client.host}/{repository}:{tag} = {reference} "
        f"(base {base.repository}@{base.digest} + the model repository at {MODELS_DIR})"
    )
    return ServingImage(line, reference, tag)
