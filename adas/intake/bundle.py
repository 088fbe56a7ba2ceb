"""Validate a candidate checkpoint bundle against its contract, treating every byte as untrusted.

A short checklist, cheapest check first, one error type: every failure raises
:class:`BundleRejected` naming the file and field at fault, so a person reading
``inbox/rejected/<bundle>/REJECTED.txt`` knows what to fix without reading code.

1. the file tree: regular files only, within the limits of ``config/intake.yaml`` (no byte read);
2. ``contract.yaml`` and ``lineage.json``: bounded, UTF-8, strict YAML / JSON, schema;
3. a private copy of every file, hashed as it is copied (``O_NOFOLLOW``, same inode as listed),
   checked against ``SHA256SUMS`` when the bundle ships one; everything after reads the copy;
4. every pickle in the model file against the tensor-only allowlist (nothing is loaded yet);
   an ONNX model instead judged from its bytes (:func:`adas.intake.onnx_graph.check_onnx_file`:
   size, protobuf, opset >= 17, no external data, standard domains, the contract's tensors);
5. the model loaded, its weights checked and a smoke forward run, in the sandbox only (ONNX
   Runtime for an ONNX model, batch 1 and 2, the source-size input when declared); then its
   outputs on a probe batch against the declared layout, box space, labels and padding.
"""

import atexit
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from adas.intake.contract import CONTRACT_FILE, LINEAGE_FILE, Contract, Lineage, readable_errors
from adas.intake.files import (
    BundleFile,
    BundleRejected,
    IntakeLimits,
    copy_bundle_file,
    hash_bundle_file,
    list_bundle_files,
    load_intake_limits,
    read_bundle_bytes,
)
from adas.intake.onnx_graph import check_onnx_file
from adas.intake.parsing import parse_json, parse_yaml
from adas.intake.pickle_scan import scan_model_file
from adas.sandbox import DEFAULT_LIMITS, SandboxError, SandboxLimits, Standby, StandbyPool

CHECKSUMS_FILE = "SHA256SUMS"

__all__ = [
    "CHECKSUMS_FILE",
    "BundleDigest",
    "BundleRejected",
    "ValidatedBundle",
    "digest_bundle",
    "inspect_model",
    "prewarm_model_inspection",
    "read_contract",
    "read_lineage",
    "validate_bundle",
]


@dataclass(frozen=True)
class BundleDigest:
    """Per-file sha256 and the bundle hash over (relative path, file hash) pairs."""

    sha256: str
    files: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidatedBundle:
    """A bundle that passed every check; ``path`` is intake's private, verified copy of it."""

    path: Path
    contract: Contract
    lineage: Lineage
    digest: BundleDigest
    parameter_count: int
    output_shapes: dict[str, list[int]]


def _bundle_hash(files: dict[str, str]) -> str:
    """The bundle hash ignores the folder's own name, so a re-drop matches."""
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def digest_bundle(path: Path, limits: IntakeLimits | None = None) -> BundleDigest:
    """Hash every file (hidden names skipped) without following links."""
    listed = list_bundle_files(Path(path), limits or load_intake_limits())
    files = {f.rel: hash_bundle_file(Path(path), f) for f in listed}
    return BundleDigest(_bundle_hash(files), files, {f.rel: f.size for f in listed})


def _pydantic_reason(file: str, err: ValidationError) -> BundleRejected:
    errors = readable_errors(err)
    loc = errors[0][0]
    reasons = "; ".join(f"{where or '<top level>'}: {msg}" for where, msg in errors[:5])
    return BundleRejected(f"{file}: {loc}" if loc else file, reasons)


def _find(listed: list[BundleFile], name: str, missing: str) -> BundleFile:
    for f in listed:
        if f.rel == name:
            return f
    raise BundleRejected(name, missing)


def _contract(path: Path, listed: list[BundleFile], limits: IntakeLimits) -> Contract:
    item = _find(listed, CONTRACT_FILE, "missing file: every bundle needs an inference contract")
    raw = parse_yaml(read_bundle_bytes(path, item, limits.max_contract_bytes), CONTRACT_FILE, limits)
    if not isinstance(raw, dict):
        raise BundleRejected(CONTRACT_FILE, f"expected a mapping, got {type(raw).__name__}")
    try:
        contract = Contract.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_reason(CONTRACT_FILE, exc) from exc
    _, c, h, w = contract.input.shape
    if c * h * w > limits.max_input_elements:
        raise BundleRejected(
            f"{CONTRACT_FILE}: input.shape",
            f"{c}x{h}x{w} = {c * h * w} values per image, over the limit of {limits.max_input_elements}",
        )
    return contract


def _lineage(path: Path, listed: list[BundleFile], limits: IntakeLimits) -> Lineage:
    item = _find(listed, LINEAGE_FILE, "missing file: training run id, dataset tag and git SHA are required")
    raw = parse_json(read_bundle_bytes(path, item, limits.max_lineage_bytes), LINEAGE_FILE, limits)
    if not isinstance(raw, dict):
        raise BundleRejected(LINEAGE_FILE, f"expected an object, got {type(raw).__name__}")
    try:
        return Lineage.model_validate(raw)
    except ValidationError as exc:
        raise _pydantic_reason(LINEAGE_FILE, exc) from exc


def read_contract(path: Path, limits: IntakeLimits | None = None) -> Contract:
    limits = limits or load_intake_limits()
    return _contract(Path(path), list_bundle_files(Path(path), limits), limits)


def read_lineage(path: Path, limits: IntakeLimits | None = None) -> Lineage:
    limits = limits or load_intake_limits()
    return _lineage(Path(path), list_bundle_files(Path(path), limits), limits)


def _verify_checksums(copy: Path, files: dict[str, str]) -> None:
    """If the bundle ships ``SHA256SUMS`` (``sha256sum`` format), every listed file must match."""
    if CHECKSUMS_FILE not in files:
        return
    text = (copy / CHECKSUMS_FILE).read_bytes().decode("utf-8", errors="replace")
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise BundleRejected(f"{CHECKSUMS_FILE}: line {n}", "expected '<sha256>  <file>'")
        expected, name = parts[0], parts[1].lstrip("*")
        if name not in files:
            raise BundleRejected(
                f"{CHECKSUMS_FILE}: line {n}", f"lists {name[:80]}, which is not in the bundle"
            )
        if files[name] != expected:
            raise BundleRejected(
                name, f"sha256 mismatch: {CHECKSUMS_FILE} says {expected[:64]}, file hashes to {files[name]}"
            )


def _private_copy(path: Path, listed: list[BundleFile], dest: Path) -> dict[str, str]:
    """Copy every listed file into ``dest`` (never followed, never swapped); the copies' hashes."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    hashes = {}
    for f in listed:
        (dest / f.rel).parent.mkdir(parents=True, exist_ok=True)
        hashes[f.rel] = copy_bundle_file(path, f, dest / f.rel)
    return hashes


_INSPECT_WORKER = "adas.intake.inspect_worker"
# Sandboxed inspect workers started ahead, one bundle each (see adas.sandbox.StandbyPool); the
# first is started by prewarm_model_inspection() or by the first bundle, the next after each.
_STANDBYS = StandbyPool(_INSPECT_WORKER)
atexit.register(_STANDBYS.close)


def prewarm_model_inspection(wait: float | None = None) -> None:
    """Start the sandboxed worker that will judge the next bundle's model now (an intake run
    calls this before it lists bundles), so that bundle does not wait for torch's import; with
    ``wait``, also wait (at most that many seconds) until it is ready."""
    if wait is None:
        _STANDBYS.start()
    else:
        _STANDBYS.wait_ready(wait)


def _inspect(standby: Standby, copy: Path, contract: Contract, timeout: float) -> dict:
    standby.deliver(copy)
    standby.worker.send({"contract": contract.model_dump_json()})
    return standby.worker.final_result(timeout)


def inspect_model(
    copy: Path, contract: Contract, limits: SandboxLimits | None = None
) -> tuple[int, dict[str, list[int]]]:
    """Load the model, check its weights and run a smoke forward, in a sandbox of its own (one
    started ahead, see :func:`prewarm_model_inspection`, unless ``limits`` asks for others);
    returns the parameter count and the output shapes, or raises naming what the model did wrong."""
    try:
        if limits is None:
            with _STANDBYS.take(DEFAULT_LIMITS.wall_seconds) as standby:
                result = _inspect(standby, copy, contract, DEFAULT_LIMITS.wall_seconds)
        else:
            pool = StandbyPool(_INSPECT_WORKER, limits=limits)
            try:
                with pool.take(limits.wall_seconds) as standby:
                    result = _inspect(standby, copy, contract, limits.wall_seconds)
            finally:
                pool.close()
    except SandboxError as exc:
        raise BundleRejected(contract.model_file, f"the sandboxed load failed: {exc}") from exc
    if "reason" in result:
        raise BundleRejected(str(result["field"]), str(result["reason"]))
    return int(result["parameter_count"]), {k: list(v) for k, v in result["output_shapes"].items()}


def validate_bundle(path: Path, workdir: Path, limits: IntakeLimits | None = None) -> ValidatedBundle:
    """Every check intake runs, cheapest first; raises :class:`BundleRejected` on the first failure.

    ``workdir`` receives intake's private copy of the bundle (``workdir/bundle``), which the
    result points to and from which the bundle is stored.
    """
    limits = limits or load_intake_limits()
    path = Path(path)
    listed = list_bundle_files(path, limits)
    contract = _contract(path, listed, limits)
    lineage = _lineage(path, listed, limits)
    if not any(f.rel == contract.model_file for f in listed):
        raise BundleRejected(
            f"{CONTRACT_FILE}: model_file", f"names {contract.model_file!r}, which is not in the bundle"
        )
    copy = Path(workdir) / "bundle"
    files = _private_copy(path, listed, copy)
    _verify_checksums(copy, files)
    if contract.model_format == "onnx":
        check_onnx_file(copy / contract.model_file, contract, max_bytes=limits.max_file_bytes)
    else:
        scan_model_file(copy / contract.model_file, contract.model_file, contract.model_format)
    params, shapes = inspect_model(copy, contract)
    digest = BundleDigest(_bundle_hash(files), files, {f.rel: f.size for f in listed})
    return ValidatedBundle(copy, contract, lineage, digest, params, shapes)
