"""A model pack cell as an OCI artifact: build it from the store, push it, pull it by digest.

The artifact follows the CNCF ModelPack specification v0.0.7 (github.com/modelpack/model-spec,
tag v0.0.7: ``docs/spec.md``, ``docs/config.md``, ``specs-go/v1/mediatype.go``,
``schema/config-schema.json``) on the OCI image manifest 1.1 (``artifactType``):

* manifest ``application/vnd.oci.image.manifest.v1+json`` with ``artifactType``
  ``application/vnd.cncf.model.manifest.v1+json``;
* config ``application/vnd.cncf.model.config.v1+json``: the model's identity (name, version,
  git revision, creation time), technical metadata (format, precision, quantization, parameter
  size) and ``modelfs.diffIds``. Its JSON schema is closed (``additionalProperties: false``),
  so lineage and target go into the manifest's annotations and the inference contract travels
  as ``inference_config.json`` in the weight-config layer, never as extra config keys that a
  conforming reader would reject;
* one uncompressed tar layer per file group (:data:`LAYER_GROUPS`): the bundle's program and
  the engine (``weight``, one layer each), Triton repository (``code``), inference contract and
  lock file (``weight.config``), reports, SBOM, and the pack's signed manifest with every
  signature (``doc``).

A file of the Triton repository with the same bytes as a file of an earlier layer (the engine's
copy under ``triton/<model>_engine/1/``) is not archived twice: the Triton layer's annotation
``io.adas.layer.copies`` maps it to that file, and the pull puts it in place before checking
every file against the signed list. So a new engine re-sends the engine once, and a version
whose program did not change does not re-send the program.

Layers are deterministic tars (entries sorted, mtime 0, uid/gid 0, empty owner names, mode
0644, PAX format), so packing identical bytes gives identical digests, and a layer whose files
did not change between two versions is not uploaded again. The signatures have a layer of their
own because ECDSA signatures differ at every signing: kept beside their files, they would give
every layer a new digest at each re-signing.

Push order: layers, config, then the manifest PUT under its tag (the registry accepts a manifest
only when every blob it references exists, and a blob only when its digest checks): no tag ever
names a partial artifact. Pull: by digest only; the manifest's bytes are checked against the
digest, every blob against the manifest, the unpacked files against the pack's own signed file
list, and the directory appears at its destination by one rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from adas.intake.refs import StoredFile
from adas.packaging.oci_client import (
    DEFAULT_CHUNK_SIZE,
    DIGEST_RE,
    OCI_MANIFEST,
    REPOSITORY_RE,
    TAG_RE,
    OciError,
    Progress,
    RegistryClient,
    blob_digest,
    canonical_json,
)
from adas.packaging.refs import PackRef
from adas.packaging.signing import MANIFEST_FILE, MANIFEST_SIGNATURE, PUBLIC_KEY_FILE, SIG_SUFFIX
from adas.storage import ArtifactStore, sha256_file

# ModelPack v0.0.7 media types (specs-go/v1/mediatype.go).
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_TAR = "application/vnd.cncf.model.weight.v1.tar"
WEIGHT_CONFIG_TAR = "application/vnd.cncf.model.weight.config.v1.tar"
CODE_TAR = "application/vnd.cncf.model.code.v1.tar"
DOC_TAR = "application/vnd.cncf.model.doc.v1.tar"

TITLE = "org.opencontainers.image.title"
LAYER_GROUP = "io.adas.layer.group"
LAYER_COPIES = "io.adas.layer.copies"
FILE_MODE = 0o644

# (group, media type), in manifest order; empty groups are left out.
LAYER_GROUPS: tuple[tuple[str, str], ...] = (
    ("program", WEIGHT_TAR),
    ("engine", WEIGHT_TAR),
    ("triton", CODE_TAR),
    ("config", WEIGHT_CONFIG_TAR),
    ("reports", DOC_TAR),
    ("sbom", DOC_TAR),
    ("signatures", DOC_TAR),
)
_MEDIA_TYPES = dict(LAYER_GROUPS)
_ENGINE_SUFFIXES = (".onnx", ".plan", ".engine")
_PROGRAM_SUFFIXES = (".pt2", ".pt", ".ts")
_PROGRAM_PREFIX = "bundle-"  # an ONNX bundle's own model beside the engine (serving.program_pack_name)
_CONFIG_FILES = ("inference_config.json", "requirements.lock")
_SBOM_FILES = ("sbom.cdx.json",)
_PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "int8"}
_FORMATS = {"onnxruntime": "onnx", "tensorrt": "tensorrt"}

Log = Callable[[str], None]


class OciPackError(OciError):
    """The pack's stored files do not form the pack its signed manifest lists."""


class OciPullError(OciError):
    """A pulled artifact failed a check; nothing was written at the destination."""


def oci_repository(task: str, model_name: str, namespace: str = "") -> str:
    """``[<namespace>/]<task>/<model_name>``, checked against the Distribution name grammar."""
    repository = "/".join(p for p in (namespace.strip("/"), task, model_name) if p)
    if not REPOSITORY_RE.fullmatch(repository):
        raise OciError(f"{repository!r} is not a valid OCI repository name")
    return repository


def oci_tag(version: str, device: str, precision: str, git_sha: str) -> str:
    """``<version>-<device>-<precision>-<git sha7>`` (``+`` build metadata is not valid in a tag)."""
    tag = f"{version.replace('+', '_')}-{device}-{precision}-{git_sha[:7]}"
    if not TAG_RE.fullmatch(tag):
        raise OciError(f"{tag!r} is not a valid OCI tag")
    return tag


def layer_group(rel: str) -> str:
    """Which layer a pack file goes to (every file goes to exactly one)."""
    path = PurePosixPath(rel)
    if rel in (MANIFEST_FILE, MANIFEST_SIGNATURE, PUBLIC_KEY_FILE) or rel.endswith(SIG_SUFFIX):
        return "signatures"
    if path.parts[0] == "triton":
        return "triton"
    if rel in _CONFIG_FILES:
        return "config"
    if rel in _SBOM_FILES:
        return "sbom"
    if len(path.parts) == 1 and (path.suffix in _PROGRAM_SUFFIXES or rel.startswith(_PROGRAM_PREFIX)):
        return "program"
    if len(path.parts) == 1 and (path.suffix in _ENGINE_SUFFIXES or rel == "calibration.cache"):
        return "engine"
    return "reports"


class _VerifyingReader:
    """Reads a file for the tar while hashing it: the bytes archived are the bytes checked,
    even if the file changed after the store verified it."""

    def __init__(self, path: Path) -> None:
        self._fh = path.open("rb")
        self.sha = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.sha.update(data)
        return data

    def close(self) -> None:
        self._fh.close()


def write_layer_tar(members: Mapping[str, tuple[Path, str]], dest: Path) -> tuple[str, int]:
    """A deterministic tar of ``{arcname: (path, expected sha256 hex)}``; its digest and size."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for arcname in sorted(members):
            path, expected = members[arcname]
            info = tarfile.TarInfo(arcname)
            info.size = path.stat().st_size
            info.mtime = 0
            info.mode = FILE_MODE
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.type = tarfile.REGTYPE
            reader = _VerifyingReader(path)
            try:
                tar.addfile(info, reader)  # type: ignore[arg-type]  # tarfile only calls read()
            finally:
                reader.close()
            if reader.sha.hexdigest() != expected:
                raise OciPackError(
                    f"{arcname}: changed while packing (sha256 {reader.sha.hexdigest()}, expected {expected})"
                )
    sha, size = sha256_file(dest)
    return f"sha256:{sha}", size


@dataclass(frozen=True)
class Layer:
    group: str
    media_type: str
    path: Path  # the tar on local disk
    digest: str
    size: int
    files: tuple[str, ...]  # archived in this layer's tar
    copies: tuple[tuple[str, str], ...] = ()  # (path, earlier layer's file with the same bytes)

    def descriptor(self) -> dict[str, Any]:
        annotations = {TITLE: f"{self.group}.tar", LAYER_GROUP: self.group}
        if self.copies:
            annotations[LAYER_COPIES] = canonical_json(dict(self.copies)).decode()
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
            "annotations": annotations,
        }


@dataclass(frozen=True)
class Artifact:
    """A pack cell ready to push: its blobs on local disk, the config and manifest bytes."""

    repository: str
    tag: str
    layers: tuple[Layer, ...]
    config: bytes
    manifest: bytes

    @property
    def digest(self) -> str:
        return blob_digest(self.manifest)

    @property
    def config_digest(self) -> str:
        return blob_digest(self.config)


def _param_size(count: int) -> str:
    """ModelPack's ``<count><scale-prefix>`` with at most one decimal: 1_234_567 -> ``1.2M``."""
    for scale, prefix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= scale or prefix == "K":
            return f"{count / scale:.1f}".removesuffix(".0") + prefix
    raise AssertionError("unreachable")


def model_config(pack: PackRef, body: Mapping[str, Any], diff_ids: list[str]) -> dict[str, Any]:
    """The ModelPack config (only keys its closed schema defines). Every value comes from the
    pack, none from the clock, so the same pack always gives the same config digest."""
    engine, contract = pack.engine, pack.engine.contract
    config: dict[str, Any] = {
        "format": _FORMATS.get(engine.runtime, engine.runtime),
        "precision": _PRECISIONS.get(engine.precision, engine.precision),
        "paramSize": _param_size(engine.candidate.parameter_count),
    }
    if engine.precision == "int8":
        config["quantization"] = "int8-qat" if contract.quantization_aware else "int8-ptq"
    return {
        "descriptor": {
            "name": contract.model_name,
            "version": contract.version,
            "title": f"{contract.model_name} {contract.version} for {engine.device}/{engine.precision}",
            "description": f"{contract.task} model pack, runtime {engine.runtime}",
            "revision": engine.candidate.lineage.git_sha,
            "createdAt": body["signing"]["signed_at"],
        },
        "config": config,
        "modelfs": {"type": "layers", "diffIds": diff_ids},  # uncompressed layers: diffId = digest
    }


def manifest_annotations(pack: PackRef, body: Mapping[str, Any]) -> dict[str, str]:
    """Identity, target and lineage, readable from the manifest alone (``skopeo inspect --raw``)."""
    engine, contract, lineage = pack.engine, pack.engine.contract, pack.engine.candidate.lineage
    return {
        "org.opencontainers.image.created": body["signing"]["signed_at"],
        "org.opencontainers.image.title": contract.model_name,
        "org.opencontainers.image.version": contract.version,
        "org.opencontainers.image.revision": lineage.git_sha,
        "io.adas.model.task": contract.task,
        "io.adas.target.device": engine.device,
        "io.adas.target.precision": engine.precision,
        "io.adas.target.runtime": engine.runtime,
        "io.adas.lineage.training-run-id": lineage.training_run_id,
        "io.adas.lineage.dataset-tag": lineage.dataset_tag,
        "io.adas.pack.manifest-sha256": pack.manifest.sha256,
        "io.adas.pack.signing-key-id": str(body["signing"]["key_id"]),
    }


def pack_members(store: ArtifactStore, pack: PackRef) -> tuple[dict[str, Any], dict[str, StoredFile]]:
    """The pack's signed manifest body and every file of the pack (the manifest included),
    after checking that the descriptor's files are exactly what the signed manifest lists."""
    body = json.loads(store.get_bytes(pack.manifest.key, expected_sha256=pack.manifest.sha256))
    listed: dict[str, str] = body["files"]
    expected = {*listed, MANIFEST_SIGNATURE}
    if set(pack.files) != expected:
        missing, extra = sorted(expected - set(pack.files)), sorted(set(pack.files) - expected)
        raise OciPackError(
            f"{pack.prefix}: the pack's files differ from its signed manifest (missing {missing}, extra {extra})"
        )
    for rel, sha in listed.items():
        if pack.files[rel].sha256 != sha:
            raise OciPackError(
                f"{pack.prefix}/{rel}: recorded sha256 {pack.files[rel].sha256}, signed manifest lists {sha}"
            )
    return body, {**pack.files, MANIFEST_FILE: pack.manifest}


def build_artifact(store: ArtifactStore, pack: PackRef, workdir: Path, namespace: str = "") -> Artifact:
    """The pack cell as an artifact, its layer tars written under ``workdir``; every file read
    from the store is verified against its recorded sha256 (and again while archived)."""
    body, files = pack_members(store, pack)
    contract, lineage = pack.engine.contract, pack.engine.candidate.lineage
    groups: dict[str, dict[str, tuple[Path, str]]] = {}
    for rel, stored in sorted(files.items()):
        local = store.fetch(stored.key, expected_sha256=stored.sha256)
        groups.setdefault(layer_group(rel), {})[rel] = (local, stored.sha256)
    workdir.mkdir(parents=True, exist_ok=True)
    layers = []
    archived: dict[str, str] = {}  # sha256 -> the first archived file with those bytes
    for group, media_type in LAYER_GROUPS:
        if group not in groups:
            continue
        members, copies = dict(groups[group]), []
        if group == "triton":  # the engine's copy inside the repository: archived once
            for rel, (_, sha) in groups[group].items():
                if sha in archived:
                    copies.append((rel, archived[sha]))
                    del members[rel]
        for rel, (_, sha) in sorted(members.items()):
            archived.setdefault(sha, rel)
        dest = workdir / f"{group}.tar"
        digest, size = write_layer_tar(members, dest)
        layers.append(
            Layer(group, media_type, dest, digest, size, tuple(sorted(members)), tuple(sorted(copies)))
        )
    config = canonical_json(model_config(pack, body, [layer.digest for layer in layers]))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": blob_digest(config), "size": len(config)},
        "layers": [layer.descriptor() for layer in layers],
        "annotations": manifest_annotations(pack, body),
    }
    return Artifact(
        repository=oci_repository(contract.task, contract.model_name, namespace),
        tag=oci_tag(contract.version, pack.engine.device, pack.engine.precision, lineage.git_sha),
        layers=tuple(layers),
        config=config,
        manifest=canonical_json(manifest),
    )


@dataclass(frozen=True)
class PushResult:
    reference: str  # <registry host>/<repository>@sha256:...
    repository: str
    tag: str
    digest: str
    uploaded: tuple[str, ...]  # blob digests sent
    skipped: tuple[str, ...]  # blob digests the registry already had
    bytes_uploaded: int


def push_artifact(
    client: RegistryClient,
    artifact: Artifact,
    log: Log = print,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PushResult:
    """Upload the blobs the registry lacks (layers, then config), then PUT the manifest under its
    tag. Re-running after an interruption uploads only what is still missing."""
    repo = artifact.repository
    uploaded: list[str] = []
    skipped: list[str] = []
    sent = 0
    blobs: list[tuple[str, str, bytes | Path, int]] = [
        (layer.group, layer.digest, layer.path, layer.size) for layer in artifact.layers
    ]
    blobs.append(("config", artifact.config_digest, artifact.config, len(artifact.config)))
    for name, digest, source, size in blobs:
        if client.blob_exists(repo, digest):
            skipped.append(digest)
            log(f"{name}: {digest} already in {client.host}/{repo}, not uploaded")
            continue
        client.upload_blob(repo, digest, source, size, chunk_size=chunk_size, progress=progress)
        uploaded.append(digest)
        sent += size
        log(f"{name}: uploaded {digest} ({size} bytes)")
    answered = client.put_manifest(repo, artifact.tag, artifact.manifest)
    if answered and answered != artifact.digest:
        raise OciError(
            f"OCI registry {client.url}: manifest {repo}:{artifact.tag} stored as {answered}, "
            f"expected {artifact.digest}"
        )
    reference = f"{client.host}/{repo}@{artifact.digest}"
    log(f"pushed {client.host}/{repo}:{artifact.tag} = {reference}")
    return PushResult(reference, repo, artifact.tag, artifact.digest, tuple(uploaded), tuple(skipped), sent)


def publish_pack_oci(
    store: ArtifactStore,
    pack: PackRef,
    client: RegistryClient,
    workdir: Path,
    namespace: str = "",
    log: Log = print,
    progress: Progress | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> PushResult:
    """:func:`build_artifact` (tars under ``workdir``) then :func:`push_artifact`."""
    artifact = build_artifact(store, pack, workdir, namespace)
    return push_artifact(client, artifact, log=log, progress=progress, chunk_size=chunk_size)


# ------------------------------------------------------------------------------------------ pull


@dataclass(frozen=True)
class PulledArtifact:
    reference: str
    digest: str
    path: Path
    files: dict[str, str]  # rel -> sha256 hex of every unpacked file
    manifest: dict[str, Any]
    config: dict[str, Any]


def _safe_member(member: tarfile.TarInfo, layer: str) -> PurePosixPath:
    path = PurePosixPath(member.name)
    if not member.isreg():
        raise OciPullError(f"layer {layer}: {member.name!r} is not a regular file")
    if path.is_absolute() or ".." in path.parts or not path.parts or member.name != path.as_posix():
        raise OciPullError(f"layer {layer}: unsafe path {member.name!r}")
    return path


def _unpack(tar_path: Path, layer: str, into: Path, seen: set[str]) -> None:
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            rel = _safe_member(member, layer)
            if rel.as_posix() in seen:
                raise OciPullError(f"layer {layer}: {rel} is also in another layer")
            seen.add(rel.as_posix())
            dest = into / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None  # a regular file always has a stream
            with src, open(dest, "xb") as out:
                shutil.copyfileobj(src, out, 1024 * 1024)
            os.chmod(dest, FILE_MODE)


def _layer_copies(descriptor: Mapping[str, Any], layer: str) -> dict[str, str]:
    """The layer's ``io.adas.layer.copies``: ``{path: earlier layer's file}``, both safe paths."""
    raw = (descriptor.get("annotations") or {}).get(LAYER_COPIES)
    if raw is None:
        return {}
    try:
        copies = json.loads(raw)
    except ValueError as exc:
        raise OciPullError(f"layer {layer}: {LAYER_COPIES} is not JSON ({exc})") from exc
    if not isinstance(copies, dict) or not all(isinstance(v, str) for v in copies.values()):
        raise OciPullError(f"layer {layer}: {LAYER_COPIES} is not an object of paths")
    for path in (*copies, *copies.values()):
        p = PurePosixPath(path)
        if p.is_absolute() or ".." in p.parts or not p.parts or path != p.as_posix():
            raise OciPullError(f"layer {layer}: unsafe path {path!r} in {LAYER_COPIES}")
    return copies


def _place_copies(copies: Mapping[str, str], layer: str, into: Path, seen: set[str]) -> None:
    """Put each copy in place from the file an earlier layer unpacked (a hard link where the
    file system allows; what the link holds is checked with every other file afterwards)."""
    for rel, source in sorted(copies.items()):
        if source not in seen:
            raise OciPullError(f"layer {layer}: {rel} copies {source}, which no earlier layer holds")
        if rel in seen:
            raise OciPullError(f"layer {layer}: {rel} is also in another layer")
        seen.add(rel)
        dest = into / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(into / source, dest)
        except OSError:
            shutil.copyfile(into / source, dest)
            os.chmod(dest, FILE_MODE)


def _check_pack_files(root: Path, reference: str) -> dict[str, str]:
    """Every unpacked file against the pack manifest's list: same set, same sha256. (Whether a
    trusted key signed that list is :func:`adas.packaging.signing.check_pack`'s question.)"""
    files = {
        p.relative_to(root).as_posix(): sha256_file(p)[0] for p in sorted(root.rglob("*")) if p.is_file()
    }
    if MANIFEST_FILE not in files:
        raise OciPullError(f"{reference}: no {MANIFEST_FILE} in the artifact")
    try:
        listed: dict[str, str] = dict(json.loads((root / MANIFEST_FILE).read_bytes())["files"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OciPullError(f"{reference}: {MANIFEST_FILE} has no file list ({exc!r})") from exc
    expected = {*listed, MANIFEST_FILE, MANIFEST_SIGNATURE}
    if set(files) != expected:
        raise OciPullError(
            f"{reference}: files differ from {MANIFEST_FILE} "
            f"(missing {sorted(expected - set(files))}, extra {sorted(set(files) - expected)})"
        )
    for rel, sha in listed.items():
        if files[rel] != sha:
            raise OciPullError(f"{reference}: {rel} has sha256 {files[rel]}, {MANIFEST_FILE} lists {sha}")
    return files


def _parse_manifest(data: bytes, reference: str) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise OciPullError(f"{reference}: manifest is not JSON ({exc})") from exc
    if manifest.get("mediaType") != OCI_MANIFEST or manifest.get("artifactType") != ARTIFACT_TYPE:
        raise OciPullError(
            f"{reference}: not a ModelPack artifact (mediaType {manifest.get('mediaType')!r}, "
            f"artifactType {manifest.get('artifactType')!r})"
        )
    if manifest.get("config", {}).get("mediaType") != CONFIG_MEDIA_TYPE:
        raise OciPullError(f"{reference}: config media type {manifest.get('config', {}).get('mediaType')!r}")
    return manifest


def _fetch_verified(
    client: RegistryClient,
    repository: str,
    descriptor: Mapping[str, Any],
    name: str,
    dest: Path,
    reference: str,
) -> None:
    expected = descriptor["digest"]
    if not DIGEST_RE.fullmatch(expected):
        raise OciPullError(f"{reference}: {name} has an unsupported digest {expected!r}")
    actual, size = client.get_blob(repository, expected, dest)
    if actual != expected or size != descriptor["size"]:
        raise OciPullError(
            f"{reference}: {name} refused: the registry sent {actual} ({size} bytes), "
            f"the manifest lists {expected} ({descriptor['size']} bytes)"
        )


def pull_artifact(
    client: RegistryClient, repository: str, digest: str, dest: Path, log: Log = print
) -> PulledArtifact:
    """Pull ``repository@digest`` into ``dest`` (which must not exist): the manifest checked
    against ``digest``, every blob against the manifest, every file against the pack's signed
    file list (the signature over that list is checked by the caller, against its trust root).
    Any refusal leaves ``dest`` absent and no temporary directory behind."""
    reference = f"{client.host}/{repository}@{digest}"
    if not DIGEST_RE.fullmatch(digest):
        raise OciPullError(f"{reference}: pull by sha256 digest only")
    dest = Path(dest)
    if dest.exists():
        raise OciPullError(f"{dest}: already exists; pull into a new directory")
    data = client.get_manifest(repository, digest)
    if blob_digest(data) != digest:
        raise OciPullError(f"{reference}: the registry sent a manifest with digest {blob_digest(data)}")
    manifest = _parse_manifest(data, reference)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.pull-", dir=dest.parent))
    try:
        _fetch_verified(client, repository, manifest["config"], "config", tmp / "config.json", reference)
        config = json.loads((tmp / "config.json").read_bytes())
        layers = manifest.get("layers") or []
        diff_ids = [layer["digest"] for layer in layers]
        if config.get("modelfs", {}).get("diffIds") != diff_ids:
            raise OciPullError(f"{reference}: config diffIds do not match the manifest's layers")
        content = tmp / "content"
        seen: set[str] = set()
        content.mkdir()
        for i, descriptor in enumerate(layers):
            title = (descriptor.get("annotations") or {}).get(TITLE, "")
            name = f"layer {i} ({title or descriptor.get('mediaType')})"
            blob = tmp / f"layer-{i}.tar"
            _fetch_verified(client, repository, descriptor, name, blob, reference)
            _unpack(blob, name, content, seen)
            _place_copies(_layer_copies(descriptor, name), name, content, seen)
            blob.unlink()
        files = _check_pack_files(content, reference)
        os.rename(content, dest)  # atomic: dest appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"pulled {reference} into {dest} ({len(files)} files)")
    return PulledArtifact(reference, digest, dest, files, manifest, config)
