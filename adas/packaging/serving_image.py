"""Whether a serving image (Triton base + the model repository layer) can be built at publication,
said in one line of the publication report (#14 item 5).

The base is ``config/serving.yaml``'s ``base_image``, configured only when pinned by digest. No
image is built yet in any case (``buildah``/``umoci`` are not wired in): the pack artifact is what
gets published, and the line says why: no base configured, the base unreachable (naming the
error), or reachable but no builder.
"""

from __future__ import annotations

from adas.packaging.oci_client import OciError, RegistryClient
from adas.packaging.pack import BaseImage

_DOCKER_HUB = "registry-1.docker.io"
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def base_location(base: BaseImage) -> tuple[str, str]:
    """(registry URL, repository) of an image name as Docker reads it: the first component is a
    host when it has a dot, a port or is localhost; else Docker Hub (``library/`` for one name)."""
    first, _, rest = base.repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        scheme = "http" if first.split(":")[0] in _LOOPBACK or first.startswith("[::1]") else "https"
        return f"{scheme}://{first}", rest
    return f"https://{_DOCKER_HUB}", base.repository if rest else f"library/{base.repository}"


def serving_image_line(base: BaseImage, published: str, timeout_s: float = 5.0) -> str:
    """The one line the publication report carries about the serving image; ``published`` names
    the pack artifact that is published instead. Anonymous probe: our registry's credentials
    (``ADAS_OCI_*``) are never sent to the base image's registry."""
    fallback = f"the pack artifact {published} is what is published"
    if base.digest is None:
        return f"serving image: none built, no base image pinned by digest in config/serving.yaml; {fallback}"
    name = f"{base.repository}@{base.digest}"
    url, repository = base_location(base)
    try:
        found = RegistryClient(url, None, timeout_s).manifest_digest(
            repository,
            base.digest,
            accept="application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, "
            "application/vnd.docker.distribution.manifest.list.v2+json, "
            "application/vnd.docker.distribution.manifest.v2+json",
        )
    except OciError as exc:
        return f"serving image: none built, base {name} unreachable ({exc}); {fallback}"
    if found is None:
        return f"serving image: none built, base {name} not found in {url}; {fallback}"
    return (
        f"serving image: none built, base {name} reachable but no image builder (buildah/umoci) is "
        f"wired in; {fallback}"
    )
