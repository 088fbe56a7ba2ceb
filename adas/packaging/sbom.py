"""CycloneDX 1.5 SBOM of a model pack: its model files plus the Python serving environment.

The reference pipeline generates the SBOM with Syft. Syft is not installable here, and what we
need is narrow (the pack's files and the Python distributions that serve them), so the document
is built directly from ``importlib.metadata``. The output is plain CycloneDX 1.5 JSON, so any
downstream consumer (Trivy, Grype, Dependency-Track) reads it like a Syft-made one.
"""

from __future__ import annotations

import importlib.metadata as im
import json
import os
import re
import sysconfig
import tempfile
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from adas.storage import sha256_file

SPEC_VERSION = "1.5"
TOOL_NAME = "adas-assets-sbom"
# File suffixes that are model weights/engines (CycloneDX type machine-learning-model);
# everything else in a pack (configs, calibration caches, reports) is a plain `file`.
MODEL_SUFFIXES = frozenset({".onnx", ".plan", ".engine", ".pt", ".pth", ".ts", ".safetensors", ".tflite"})

# SPDX ids we recognise when metadata gives a bare identifier. CycloneDX only accepts ids from
# the SPDX list in `license.id`; anything not in this set is written as `license.name` instead,
# which keeps the document schema-valid while preserving the declared text for the policy.
SPDX_IDS = frozenset(
    {
        "0BSD", "AFL-2.1", "AFL-3.0", "AGPL-1.0-only", "AGPL-1.0-or-later", "AGPL-3.0-only",
        "AGPL-3.0-or-later", "Apache-1.1", "Apache-2.0", "Artistic-2.0", "BSD-1-Clause",
        "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0",
        "BUSL-1.1", "CC-BY-4.0", "CC-BY-NC-4.0", "CC-BY-NC-SA-4.0", "CC-BY-SA-4.0", "CC0-1.0",
        "CDDL-1.0", "CNRI-Python", "ECL-2.0", "EPL-1.0", "EPL-2.0", "EUPL-1.2", "GPL-2.0-only",
        "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "HPND", "ISC", "LGPL-2.0-only",
        "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only",
        "LGPL-3.0-or-later", "MIT", "MIT-0", "MIT-CMU", "MPL-1.1", "MPL-2.0", "NCSA", "OFL-1.1",
        "OpenSSL", "PSF-2.0", "Python-2.0", "SSPL-1.0", "TCL", "Unicode-DFS-2016", "Unlicense",
        "UPL-1.0", "W3C", "WTFPL", "X11", "Zlib", "ZPL-2.0", "ZPL-2.1",
    }
)  # fmt: skip
_SPDX_BY_LOWER = {i.lower(): i for i in SPDX_IDS}

# Trove classifiers that name exactly one SPDX license. Ambiguous ones ("BSD License",
# "Apache Software License": no clause count / version) stay names; the license policy
# treats them as families.
_CLASSIFIER_SPDX = {
    "MIT License": "MIT",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "ISC License (ISCL)": "ISC",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "Mozilla Public License 1.1 (MPL 1.1)": "MPL-1.1",
    "The Unlicense (Unlicense)": "Unlicense",
    "zlib/libpng License": "Zlib",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
    "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
    "Historical Permission Notice and Disclaimer (HPND)": "HPND",
    "Server Side Public License (SSPL)": "SSPL-1.0",
    "CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "GNU Affero General Public License v3 or later (AGPLv3+)": "AGPL-3.0-or-later",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 (LGPLv2)": "LGPL-2.0-only",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
}
# Classifiers that certify a license without naming one (dropped when a specific one exists).
_NON_LICENSE_CLASSIFIERS = {"OSI Approved", "DFSG approved"}
_EXPR_OPERATOR = re.compile(r"\s(?:AND|OR|WITH)\s")
_SHORT_LICENSE_FIELD = 100

ServingEnv = Literal["current"] | Path


def normalize_name(name: str) -> str:
    """PEP 503 normalisation, also what purl's pypi type requires."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pypi_purl(name: str, version: str) -> str:
    return f"pkg:pypi/{quote(normalize_name(name), safe='')}@{quote(version, safe='')}"


def _tool_version() -> str:
    try:
        return im.version("adas-assets")
    except im.PackageNotFoundError:
        return "0+unknown"


def _site_dirs(serving_env: ServingEnv) -> list[str]:
    if serving_env == "current":
        # The interpreter's own site-packages only: `sys.path` would also pick up the repo's
        # egg-info and test directories, which are not part of what gets deployed.
        paths = sysconfig.get_paths()
        return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))
    site = Path(serving_env)
    if not site.is_dir():
        raise FileNotFoundError(f"serving environment site-packages not found: {site}")
    return [str(site)]


def _spdx_expression(text: str) -> str | None:
    """``text`` if it is a bare SPDX id (canonical case) or an expression of known ids."""
    if text.lower() in _SPDX_BY_LOWER:
        return _SPDX_BY_LOWER[text.lower()]
    if not _EXPR_OPERATOR.search(text):
        return None
    leaves = [t for t in re.split(r"[()\s]+", text) if t and t not in {"AND", "OR", "WITH"}]
    # Exceptions after WITH (e.g. LLVM-exception) are not licenses; accept them as-is.
    known = all(t.lower() in _SPDX_BY_LOWER or t.endswith("-exception") for t in leaves)
    return text if known else None


def _license_classifiers(classifiers: Iterable[str]) -> list[str]:
    names = [c.split("::")[1:] for c in classifiers if c.startswith("License ::")]
    names = [[p.strip() for p in parts] for parts in names]
    leaves = [parts[-1] for parts in names if parts]
    specific = [n for n in leaves if n not in _NON_LICENSE_CLASSIFIERS]
    return sorted(set(specific or leaves))


def _licenses(meta: im.PackageMetadata) -> tuple[list[dict[str, Any]], str]:
    """CycloneDX licenses of one distribution and which metadata field they came from.

    Precedence: PEP 639 License-Expression; a License field that is already SPDX; trove
    classifiers (a fixed vocabulary beats free text such as "Dual License"); free text.
    """
    expression = (meta.get("License-Expression") or "").strip()
    if expression:
        return [{"expression": expression}], "License-Expression"
    field = (meta.get("License") or "").strip()
    if field.upper() == "UNKNOWN":
        field = ""
    short = bool(field) and "\n" not in field and len(field) <= _SHORT_LICENSE_FIELD
    if short:
        spdx = _spdx_expression(field)
        if spdx is not None:
            if spdx in SPDX_IDS:
                return [{"license": {"id": spdx}}], "License"
            return [{"expression": spdx}], "License"
    classifiers = _license_classifiers(meta.get_all("Classifier") or [])
    if classifiers:
        entries = []
        for name in classifiers:
            spdx_id = _CLASSIFIER_SPDX.get(name)
            entries.append({"license": {"id": spdx_id} if spdx_id else {"name": name}})
        return entries, "Classifier"
    if field:
        # Some projects paste the whole license text into License; keep its first line.
        first = next(line.strip() for line in field.splitlines() if line.strip())
        return [{"license": {"name": first[:_SHORT_LICENSE_FIELD]}}], "License"
    return [], "none"


def _library_component(dist: im.Distribution) -> dict[str, Any]:
    meta = dist.metadata
    name, version = meta["Name"], dist.version
    purl = pypi_purl(name, version)
    component: dict[str, Any] = {
        "type": "library",
        "bom-ref": purl,
        "name": normalize_name(name),
        "version": version,
        "purl": purl,
    }
    licenses, source = _licenses(meta)
    if licenses:
        component["licenses"] = licenses
    properties = [{"name": "adas:license-source", "value": source}]
    declared = (meta.get("License") or "").strip()
    if declared and source != "License":
        # Keep the free-text License field for auditors even when classifiers won.
        properties.append({"name": "adas:license-declared", "value": declared.splitlines()[0][:200]})
    # The RECORD lists a sha256 of every installed file, so hashing the RECORD pins the whole
    # installed content of the distribution. The wheel's own hash is not recoverable from an
    # installed environment; say which file the hash covers so nobody compares it to PyPI's.
    record = _dist_file(dist, "RECORD")
    if record is not None:
        component["hashes"] = [{"alg": "SHA-256", "content": sha256_file(record)[0]}]
        properties.append({"name": "adas:hash-subject", "value": "dist-info/RECORD"})
    component["properties"] = properties
    return component


def _dist_file(dist: im.Distribution, name: str) -> Path | None:
    """A file of the distribution's own ``.dist-info`` directory, via the public API."""
    for entry in dist.files or []:
        if entry.name == name and entry.parent.name.endswith(".dist-info"):
            path = Path(str(dist.locate_file(entry)))
            return path if path.is_file() else None
    return None


def python_components(serving_env: ServingEnv) -> list[dict[str, Any]]:
    """One ``library`` component per installed distribution (first on the path wins)."""
    seen: dict[str, dict[str, Any]] = {}
    for dist in im.distributions(path=_site_dirs(serving_env)):
        name = dist.metadata["Name"]
        if not name:  # a broken or half-removed install
            continue
        key = normalize_name(name)
        if key not in seen:
            seen[key] = _library_component(dist)
    return list(seen.values())


def model_file_components(model_files: dict[str, Path], version: str) -> list[dict[str, Any]]:
    components = []
    for name, path in model_files.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model pack file {name!r} not found at {path}")
        kind = "machine-learning-model" if path.suffix.lower() in MODEL_SUFFIXES else "file"
        components.append(
            {
                "type": kind,
                "bom-ref": f"model-file:{name}",
                "name": name,
                "version": version,
                "hashes": [{"alg": "SHA-256", "content": sha256_file(path)[0]}],
                "properties": [{"name": "adas:size-bytes", "value": str(path.stat().st_size)}],
            }
        )
    return components


def _sort_key(component: dict[str, Any]) -> tuple[str, str, str]:
    return (component["type"], component["name"], component.get("version", ""))


def build_sbom(
    model_files: dict[str, Path],
    *,
    component_name: str,
    version: str,
    serving_env: ServingEnv = "current",
    timestamp: datetime | None = None,
    serial_number: uuid.UUID | None = None,
) -> dict[str, Any]:
    """CycloneDX 1.5 document for a model pack.

    ``model_files`` maps the name of each file inside the pack to where it is now.
    ``serving_env`` is ``"current"`` (this interpreter) or a path to a ``site-packages``
    directory of the serving image. Components are sorted so two SBOMs of the same pack and
    environment differ only in serial number and timestamp (both can be pinned for tests).
    """
    when = (timestamp or datetime.now(UTC)).astimezone(UTC)
    main_ref = f"model-pack:{component_name}@{version}"
    components = sorted(
        model_file_components(model_files, version) + python_components(serving_env), key=_sort_key
    )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "serialNumber": (serial_number or uuid.uuid4()).urn,
        "version": 1,
        "metadata": {
            "timestamp": when.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "tools": {
                "components": [
                    {"type": "application", "name": TOOL_NAME, "version": _tool_version()},
                ]
            },
            # `application`, not `machine-learning-model`: Trivy 0.76 rejects an SBOM whose
            # metadata component has that type ("unsupported type"); the pack's model files
            # below keep the precise type, which Trivy accepts there.
            "component": {
                "type": "application",
                "bom-ref": main_ref,
                "name": component_name,
                "version": version,
            },
        },
        "components": components,
        # The pack depends on its files and on the serving environment's libraries.
        "dependencies": [{"ref": main_ref, "dependsOn": sorted(c["bom-ref"] for c in components)}],
    }


def write_sbom(path: Path, sbom: dict[str, Any]) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a document."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(sbom, fh, indent=2, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the SBOM is meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
