"""Governance checks before anything moves to production.

Every condition is evaluated (none short-circuits another), so a refused promotion lists
every unmet condition with what to do about it:

* approvals recorded for each required role (technical, safety, security, product);
* every artifact re-hashed against the sha256 pinned in the entry;
* the pack's signed manifest verified with a key of the trust root (``trusted_keys.yaml``,
  :mod:`adas.packaging.trust`) that was valid when the pack was signed, and every file equal to
  the manifest's sha256, none missing, none added; never the key the pack ships with (whoever
  can rewrite a pack can rewrite its key). A refusal names the key id;
* an SBOM present and a CycloneDX document;
* the vulnerability gate passed, or waived with a written justification;
* third-party licenses passed;
* evaluation and simulation verdicts green for this version on this target;
* a newer semantic version than production (an older one is a rollback).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from adas.config_errors import ConfigError
from adas.packaging.signing import MANIFEST_FILE, check_pack
from adas.packaging.trust import load_trust_file
from adas.registry.config import GovernancePolicy
from adas.registry.models import Entry, EntryBody, Event, RegistryError, Verdict, semver_key
from adas.registry.store import RegistryStore
from adas.storage import ArtifactStore


class Condition(BaseModel):
    name: str
    met: bool
    detail: str


class GovernanceReport(BaseModel):
    entry_id: int
    ref: str
    target: str
    checked_at: datetime
    conditions: list[Condition]

    @property
    def passed(self) -> bool:
        return all(c.met for c in self.conditions)

    @property
    def unmet(self) -> list[Condition]:
        return [c for c in self.conditions if not c.met]

    def summary(self) -> str:
        if self.passed:
            return f"{self.ref}: all {len(self.conditions)} governance conditions met"
        return f"{self.ref}: promotion refused, {len(self.unmet)} unmet condition(s):\n" + "\n".join(
            f"  - {c.name}: {c.detail}" for c in self.unmet
        )

    def to_markdown(self) -> str:
        head = "PASSED" if self.passed else f"REFUSED ({len(self.unmet)} unmet)"
        lines = [f"### Governance {head}: {self.ref}", "", "| condition | met | detail |", "|---|---|---|"]
        for c in self.conditions:
            detail = c.detail.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {c.name} | {'yes' if c.met else '**NO**'} | {detail} |")
        return "\n".join(lines)


class GovernanceRefused(RegistryError):
    def __init__(self, report: GovernanceReport) -> None:
        super().__init__(report.summary())
        self.report = report


@dataclass
class Verification:
    """Re-hash and signature check of an entry's artifacts."""

    files: int = 0
    hashed: list[str] = field(default_factory=list)
    signed: list[str] = field(default_factory=list)
    hash_problems: list[str] = field(default_factory=list)
    signature_problems: list[str] = field(default_factory=list)
    key_id: str | None = None  # the key that signed the pack's manifest, as the manifest names it
    signed_at: datetime | None = None
    workdir: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.hash_problems and not self.signature_problems


def _limit(problems: list[str], n: int = 6) -> str:
    more = f" (+{len(problems) - n} more)" if len(problems) > n else ""
    return "; ".join(problems[:n]) + more


def _copy_pinned(store: ArtifactStore, key: str, sha256: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.fetch(key, expected_sha256=sha256), dest)


def verify_artifacts(
    store: ArtifactStore, body: EntryBody, trusted_keys: Path | None, workdir: Path
) -> Verification:
    """Re-hash every artifact the entry points to (against the sha256 the entry pins), then
    verify the pack against the trust file ``trusted_keys``; every problem is collected (not
    only the first). Files land under ``workdir``."""
    shutil.rmtree(workdir, ignore_errors=True)  # nothing left over from an earlier check counts
    out = Verification(workdir=workdir)
    pointers = body.pointers
    artifacts = dict(pointers.artifacts)
    out.files = len(artifacts)
    refused = set()
    for rel, p in sorted(artifacts.items()):
        try:
            _copy_pinned(store, p.key, p.sha256, workdir / rel)
            out.hashed.append(rel)
        except Exception as exc:  # integrity error, missing file
            out.hash_problems.append(f"{rel}: {exc}")
            refused.add(rel)
    if body.adopted or pointers.manifest is None:
        return out
    try:
        _copy_pinned(store, pointers.manifest.key, pointers.manifest.sha256, workdir / MANIFEST_FILE)
    except Exception as exc:
        out.hash_problems.append(f"pack manifest: {exc}")
        out.signature_problems.append("the pack manifest could not be read: nothing to verify against")
        return out
    if trusted_keys is None:
        out.signature_problems.append("no trust root configured: no signature can be trusted")
        return out
    try:
        trust = load_trust_file(trusted_keys)
    except ConfigError as exc:
        out.signature_problems.append(f"trust root: {exc}")
        return out
    check = check_pack(workdir, trust, refused)  # a file refused above is not reported twice
    out.key_id, out.signed_at, out.signed = check.key_id, check.signed_at, check.signed
    out.signature_problems.extend(check.problems)
    return out


def _read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _verdict_condition(
    name: str,
    v: Verdict | None,
    body: EntryBody,
    entry_id: int,
    acceptances: list[Event],
    policy: GovernancePolicy,
) -> Condition:
    if v is None:
        return Condition(name=name, met=False, detail="no verdict recorded for this entry")
    if (v.version, v.device, v.precision) != (body.version, body.device, body.precision):
        return Condition(
            name=name,
            met=False,
            detail=f"the verdict is for {v.version} on {v.device}/{v.precision}, not {body.version} on {body.target}",
        )
    if v.status == "amber":
        return _amber_condition(name, v, body, entry_id, acceptances, policy)
    if not v.passed:
        failing = f" (failing: {', '.join(v.failing)})" if v.failing else ""
        first = v.rationale.strip().splitlines()[0] if v.rationale.strip() else "red"
        return Condition(name=name, met=False, detail=f"RED for {body.target}{failing}: {first}")
    return Condition(name=name, met=True, detail=f"green for {body.target}")


def _amber_condition(
    name: str, v: Verdict, body: EntryBody, entry_id: int, acceptances: list[Event], policy: GovernancePolicy
) -> Condition:
    """Amber blocks automatic promotion. It is met only by an approval of an allowed role whose
    quote contains every undecided interval, exactly as the verdict states it: a person accepts
    the evidence they read, and an interval that changes (a re-evaluation) needs a new approval."""
    allowed = [a for a in acceptances if a.payload.get("role") in policy.amber_accept_roles]
    for a in reversed(allowed):
        quote = str(a.payload.get("quote", ""))
        if all(item in quote for item in v.amber):
            return Condition(
                name=name,
                met=True,
                detail=f"AMBER accepted by {a.actor} ({a.payload.get('role')}) at {a.at:%Y-%m-%d %H:%M} UTC, "
                f"quoting {'; '.join(v.amber)}: {a.reason}",
            )
    stale = " (an acceptance was recorded but does not quote the current intervals)" if acceptances else ""
    roles = " or ".join(policy.amber_accept_roles)
    return Condition(
        name=name,
        met=False,
        detail=f"AMBER (insufficient evidence) for {body.target}: {'; '.join(v.amber)}{stale}. "
        f"Gather more evidence, or accept it with an approval that quotes every interval: "
        f"adas-registry approve --entry {entry_id} --role {roles.split(' or ')[0]} --accept-amber "
        f"'{'; '.join(v.amber)}' --reason '...' (roles: {roles})",
    )


def check_governance(
    registry: RegistryStore,
    store: ArtifactStore,
    entry: Entry,
    *,
    trusted_keys: Path | None,
    policy: GovernancePolicy,
    evaluation: Verdict | None = None,
    simulation: Verdict | None = None,
    workdir: Path | None = None,
) -> GovernanceReport:
    """Evaluate every condition; ``evaluation``/``simulation`` override the verdicts recorded in
    the entry (the freshest ones, e.g. after a nightly re-evaluation)."""
    body = entry.body
    conditions: list[Condition] = []
    approvals = registry.approvals(entry.id)
    for role in policy.required_approvals:
        e = approvals.get(role)
        conditions.append(
            Condition(
                name=f"approval: {role}",
                met=True,
                detail=f"approved by {e.actor} at {e.at:%Y-%m-%d %H:%M} UTC: {e.reason}",
            )
            if e
            else Condition(
                name=f"approval: {role}",
                met=False,
                detail=f"no {role} approval recorded (adas-registry approve --entry {entry.id} --role {role})",
            )
        )
    if body.adopted:
        conditions.append(
            Condition(
                name="signed pack", met=False, detail="an adopted baseline has no signed pack to promote"
            )
        )
    tmp = Path(tempfile.mkdtemp(prefix="governance-")) if workdir is None else workdir
    try:
        ver = verify_artifacts(store, body, trusted_keys, tmp / "pack")
        conditions.append(
            Condition(
                name="artifacts intact",
                met=not ver.hash_problems,
                detail=_limit(ver.hash_problems)
                if ver.hash_problems
                else f"{len(ver.hashed)} files re-hashed",
            )
        )
        conditions.append(_signature_condition(ver))
        pack_dir = tmp / "pack"
        sbom = _read_json(pack_dir / "sbom.cdx.json")
        if sbom is None:
            conditions.append(
                Condition(name="SBOM", met=False, detail="sbom.cdx.json is missing or unreadable")
            )
        elif sbom.get("bomFormat") != "CycloneDX" or not sbom.get("components"):
            conditions.append(
                Condition(
                    name="SBOM", met=False, detail="sbom.cdx.json is not a CycloneDX BOM with components"
                )
            )
        else:
            conditions.append(
                Condition(
                    name="SBOM",
                    met=True,
                    detail=f"CycloneDX {sbom.get('specVersion')} with {len(sbom['components'])} components",
                )
            )
        conditions.append(
            _vulnerability_condition(
                registry, entry, _read_json(pack_dir / "vulnerability_scan.json"), policy
            )
        )
        if policy.require_license_pass:
            lic = _read_json(pack_dir / "license_report.json")
            conditions.append(
                Condition(name="licenses", met=False, detail="license_report.json is missing")
                if lic is None
                else Condition(
                    name="licenses",
                    met=bool(lic.get("passed")),
                    detail="license policy passed"
                    if lic.get("passed")
                    else f"license policy failed: {lic.get('counts')}",
                )
            )
    finally:
        if workdir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    accepted = registry.amber_acceptances(entry.id)
    for name, v in (
        ("evaluation gate", evaluation or body.evaluation),
        ("simulation gate", simulation or body.simulation),
    ):
        conditions.append(_verdict_condition(name, v, body, entry.id, accepted, policy))
    if policy.require_newer_version:
        prod = registry.alias_entry(body.target, "production")
        if prod is None:
            conditions.append(
                Condition(name="newer than production", met=True, detail="no production version yet")
            )
        elif prod.id == entry.id:
            conditions.append(
                Condition(
                    name="newer than production", met=False, detail=f"{body.version} is already production"
                )
            )
        elif semver_key(body.version) <= semver_key(prod.version):
            conditions.append(
                Condition(
                    name="newer than production",
                    met=False,
                    detail=f"{body.version} is not newer than production {prod.version}: use rollback to go back",
                )
            )
        else:
            conditions.append(
                Condition(
                    name="newer than production",
                    met=True,
                    detail=f"{body.version} > production {prod.version}",
                )
            )
    return GovernanceReport(
        entry_id=entry.id,
        ref=entry.ref,
        target=body.target,
        checked_at=datetime.now(UTC),
        conditions=conditions,
    )


def _signature_condition(ver: Verification) -> Condition:
    name = "signatures (trusted keys)"
    if ver.signature_problems:
        return Condition(name=name, met=False, detail=_limit(ver.signature_problems))
    if not ver.signed:
        return Condition(name=name, met=False, detail="nothing was signed")
    return Condition(
        name=name,
        met=True,
        detail=f"signed manifest and {len(ver.signed)} file signatures verified with trusted key "
        f"{ver.key_id} (signed at {ver.signed_at.isoformat() if ver.signed_at else '?'})",
    )


def _vulnerability_condition(
    registry: RegistryStore, entry: Entry, scan: dict[str, Any] | None, policy: GovernancePolicy
) -> Condition:
    vp = policy.vulnerabilities
    if scan is None:
        problem = "vulnerability_scan.json is missing"
    elif scan.get("status") != "scanned":
        problem = f"the pack was not scanned ({scan.get('reason') or 'no reason given'})"
    else:
        counts = scan.get("counts") or {}
        blocking = {s: counts.get(s, 0) for s in vp.block_severities if counts.get(s, 0)}
        if not blocking:
            return Condition(
                name="vulnerabilities",
                met=True,
                detail=f"scanned by {scan.get('scanner')}: no {'/'.join(vp.block_severities)} findings",
            )
        problem = "blocking findings: " + ", ".join(f"{n} {s}" for s, n in blocking.items())
    waivers = [
        w
        for w in registry.waivers(entry.id)
        if len(w.payload.get("justification", "").strip()) >= vp.waiver_min_chars
    ]
    if waivers:
        w = waivers[-1]
        return Condition(
            name="vulnerabilities",
            met=True,
            detail=f"{problem}; WAIVED by {w.actor} at {w.at:%Y-%m-%d %H:%M} UTC: {w.payload['justification']}",
        )
    short = [w for w in registry.waivers(entry.id) if w not in waivers]
    hint = (
        f" (a waiver was recorded but its justification is shorter than {vp.waiver_min_chars} characters)"
        if short
        else f" and no waiver: record one with a written justification (adas-registry approve --entry {entry.id} "
        "--role security --waive-vulnerabilities '...')"
    )
    return Condition(name="vulnerabilities", met=False, detail=problem + hint)


def require_governance(report: GovernanceReport) -> None:
    if not report.passed:
        raise GovernanceRefused(report)
