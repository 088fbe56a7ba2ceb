"""Third-party license check of a model pack's SBOM against ``config/licenses.yaml``.

Each third-party component gets a verdict (allowed / denied / unknown). The check passes when
nothing is denied and nothing is unknown: a package whose metadata does not say its license
needs an override in the policy file stating the concluded license and why, and that concluded
license must itself be allowed. The markdown summary is what the UI and the model card show.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from adas.config_errors import load_yaml_model
from adas.settings import CONFIG_DIR

LICENSES_FILE = CONFIG_DIR / "licenses.yaml"
Verdict = Literal["allowed", "denied", "unknown"]
# Pack contents are first-party; everything else in the SBOM is third-party and checked.
_FIRST_PARTY_TYPES = frozenset({"file", "machine-learning-model", "data"})
_TOKEN = re.compile(r"\(|\)|[^\s()]+")
# SPDX operators are matched case-sensitively (SPDX spec, annex D), so a name such as
# "GNU Library or Lesser General Public License (LGPL)" is not read as an expression.
_OPERATORS = re.compile(r"(?:^|\s)(?:AND|OR|WITH)\s")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PolicyEntry(_Strict):
    match: str = Field(min_length=1, description="SPDX id, license name or glob (case-insensitive)")
    note: str | None = Field(default=None, description="obligation or reason shown in the report")


class LicenseOverride(_Strict):
    license: str = Field(min_length=1, description="concluded license (SPDX expression)")
    justification: str = Field(min_length=20, description="why this is the license: evidence, reviewer")
    version: str | None = Field(default=None, description="only this release; unset means every release")


class LicensePolicy(_Strict):
    version: Literal[1]
    allowed: list[PolicyEntry]
    denied: list[PolicyEntry]
    aliases: dict[str, str] = Field(default_factory=dict)
    overrides: dict[str, LicenseOverride] = Field(default_factory=dict)

    @field_validator("overrides")
    @classmethod
    def _normalized_package_names(cls, value: dict[str, LicenseOverride]) -> dict[str, LicenseOverride]:
        out: dict[str, LicenseOverride] = {}
        for name, override in value.items():
            key = _normalize(name)
            if key in out:
                raise ValueError(f"package {name!r} has two overrides (names compare PEP 503-normalized)")
            out[key] = override
        return out

    @model_validator(mode="after")
    def _no_pattern_both_allowed_and_denied(self) -> LicensePolicy:
        both = {e.match.lower() for e in self.allowed} & {e.match.lower() for e in self.denied}
        if both:
            raise ValueError(f"listed as both allowed and denied: {sorted(both)}")
        for name, override in self.overrides.items():
            try:
                _parse(override.license)
            except ValueError as exc:
                raise ValueError(f"overrides.{name}.license: {exc}") from exc
        return self

    def classify_term(self, term: str) -> tuple[Verdict, str | None]:
        """Verdict for one license (no operators) and the note of the entry that matched."""
        lowered = term.lower()
        for entry in self.denied:  # deny wins: checked before any broad allow pattern
            if fnmatch.fnmatchcase(lowered, entry.match.lower()):
                return "denied", entry.note
        for entry in self.allowed:
            if fnmatch.fnmatchcase(lowered, entry.match.lower()):
                return "allowed", entry.note
        return "unknown", None


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def load_license_policy(path: Path = LICENSES_FILE) -> LicensePolicy:
    return load_yaml_model(Path(path), LicensePolicy)


# --- SPDX expressions -------------------------------------------------------------------------
# A tiny recursive-descent parser (precedence WITH > AND > OR) into nested tuples:
# ("or", [...]), ("and", [...]) or ("term", "Apache-2.0 WITH LLVM-exception").
Node = tuple[str, Any]


def _parse(expression: str) -> Node:
    tokens = _TOKEN.findall(expression)
    if not tokens:
        raise ValueError("empty license expression")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"{expression!r}: unexpected end")
        pos += 1
        return tokens[pos - 1]

    def parse_or() -> Node:
        parts = [parse_and()]
        while peek() == "OR":
            take()
            parts.append(parse_and())
        return parts[0] if len(parts) == 1 else ("or", parts)

    def parse_and() -> Node:
        parts = [parse_with()]
        while peek() == "AND":
            take()
            parts.append(parse_with())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def parse_with() -> Node:
        token = take()
        if token == "(":
            node = parse_or()
            if take() != ")":
                raise ValueError(f"{expression!r}: missing ')'")
            return node
        if token in {")", "AND", "OR", "WITH"}:
            raise ValueError(f"{expression!r}: unexpected {token!r}")
        if peek() == "WITH":
            take()
            exception = take()
            if exception in {"(", ")", "AND", "OR", "WITH"}:
                raise ValueError(f"{expression!r}: WITH needs an exception id")
            return ("term", f"{token} WITH {exception}")
        return ("term", token)

    node = parse_or()
    if pos != len(tokens):
        raise ValueError(f"{expression!r}: unexpected {tokens[pos]!r}")
    return node


def _combine(op: str, verdicts: list[Verdict]) -> Verdict:
    if op == "and":  # every part must be acceptable
        if "denied" in verdicts:
            return "denied"
        return "unknown" if "unknown" in verdicts else "allowed"
    # "or": we may pick the best branch
    if "allowed" in verdicts:
        return "allowed"
    return "unknown" if "unknown" in verdicts else "denied"


class _Evaluation(BaseModel):
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


def evaluate_license(text: str, policy: LicensePolicy, _depth: int = 0) -> _Evaluation:
    """Verdict for a license string: an SPDX id, an expression, or a free-text name."""
    text = text.strip()
    aliases = {k.lower(): v for k, v in policy.aliases.items()}
    if text.lower() in aliases and _depth < 3:
        return evaluate_license(aliases[text.lower()], policy, _depth + 1)
    if not _OPERATORS.search(text) and not text.startswith("("):
        return _evaluate_term(text, policy, aliases)
    try:
        node = _parse(text)
    except ValueError as exc:
        return _Evaluation(verdict="unknown", reasons=[f"unparsable license expression: {exc}"])
    return _evaluate_node(node, policy, aliases)


def _evaluate_node(node: Node, policy: LicensePolicy, aliases: dict[str, str]) -> _Evaluation:
    kind, value = node
    if kind == "term":
        return _evaluate_term(value, policy, aliases)
    parts = [_evaluate_node(child, policy, aliases) for child in value]
    verdict = _combine(kind, [p.verdict for p in parts])
    if kind == "or" and verdict == "allowed":
        parts = [p for p in parts if p.verdict == "allowed"][:1]  # the branch we choose
    return _Evaluation(
        verdict=verdict,
        reasons=[r for p in parts for r in p.reasons],
        notes=[n for p in parts for n in p.notes],
    )


def _evaluate_term(term: str, policy: LicensePolicy, aliases: dict[str, str]) -> _Evaluation:
    term = aliases.get(term.lower(), term)
    verdict, note = policy.classify_term(term)
    if verdict == "unknown" and " WITH " in term:
        # An exception only grants extra permissions: judge the base license.
        base = term.split(" WITH ", 1)[0]
        verdict, note = policy.classify_term(aliases.get(base.lower(), base))
    reasons = (
        [] if verdict == "allowed" else [f"{term}: {'denied' if verdict == 'denied' else 'not in policy'}"]
    )
    if verdict == "denied" and note:
        reasons = [f"{term}: denied ({note})"]
    notes = [f"{term}: {note}"] if note and verdict == "allowed" else []
    return _Evaluation(verdict=verdict, reasons=reasons, notes=notes)


# --- Report ------------------------------------------------------------------------------------


class ComponentLicense(BaseModel):
    name: str
    version: str
    purl: str | None = None
    declared: str = Field(description="license as the package metadata states it ('' if none)")
    source: str = Field(description="metadata field the declared license came from")
    concluded: str = Field(description="license the verdict is based on (the override's, if any)")
    verdict: Verdict
    reasons: list[str] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    override: str | None = Field(default=None, description="justification of the override applied")


class LicenseReport(BaseModel):
    policy_version: int
    passed: bool
    counts: dict[str, int]
    components: list[ComponentLicense]

    @property
    def failures(self) -> list[ComponentLicense]:
        return [c for c in self.components if c.verdict != "allowed"]

    def to_markdown(self) -> str:
        status = "PASSED" if self.passed else "FAILED"
        lines = [
            f"### Third-party licenses: {status}",
            "",
            f"{len(self.components)} components checked against license policy v{self.policy_version}: "
            f"{self.counts.get('allowed', 0)} allowed, {self.counts.get('denied', 0)} denied, "
            f"{self.counts.get('unknown', 0)} unknown.",
        ]
        if self.failures:
            lines += ["", "#### Needs attention", "", "| package | version | declared | verdict | reason |",
                      "|---|---|---|---|---|"]  # fmt: skip
            for c in self.failures:
                lines.append(_row(c.name, c.version, c.declared or "(none)", c.verdict, "; ".join(c.reasons)))
        overridden = [c for c in self.components if c.override]
        if overridden:
            lines += ["", "#### Overrides applied", "", "| package | version | concluded | justification |",
                      "|---|---|---|---|"]  # fmt: skip
            for c in overridden:
                lines.append(_row(c.name, c.version, c.concluded, c.override or ""))
        obligations = [c for c in self.components if c.notes and c.verdict == "allowed"]
        if obligations:
            lines += ["", "#### Obligations", "", "| package | license | note |", "|---|---|---|"]
            for c in obligations:
                lines.append(_row(c.name, c.concluded, "; ".join(dict.fromkeys(c.notes))))
        lines += [
            "",
            "#### All components",
            "",
            "| package | version | license | verdict |",
            "|---|---|---|---|",
        ]
        for c in self.components:
            lines.append(_row(c.name, c.version, c.concluded or "(none)", c.verdict))
        return "\n".join(lines) + "\n"


def _row(*cells: str) -> str:
    # A bare `|` inside a cell splits it in the Dagster UI's markdown tables.
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def _declared_terms(component: dict[str, Any]) -> list[str]:
    """Each license entry of the component: an expression, an SPDX id or a name."""
    terms = []
    for entry in component.get("licenses", []):
        if "expression" in entry:
            terms.append(entry["expression"])
        else:
            lic = entry.get("license", {})
            terms.append(lic.get("id") or lic.get("name") or "")
    return [t.strip() for t in terms if t and t.strip()]


def _evaluate_all(terms: list[str], policy: LicensePolicy) -> _Evaluation:
    """Several entries (trove classifiers) are read as AND: conservative, as the metadata
    cannot say whether they are alternatives; a real dual license gets an override."""
    parts = [evaluate_license(t, policy) for t in terms]
    return _Evaluation(
        verdict=_combine("and", [p.verdict for p in parts]),
        reasons=[r for p in parts for r in p.reasons],
        notes=[n for p in parts for n in p.notes],
    )


def _property(component: dict[str, Any], name: str, default: str = "") -> str:
    for prop in component.get("properties", []):
        if prop.get("name") == name:
            return str(prop.get("value", default))
    return default


def check_component(component: dict[str, Any], policy: LicensePolicy) -> ComponentLicense:
    name, version = component["name"], component.get("version", "")
    terms = _declared_terms(component)
    declared = " AND ".join(f"({t})" if " " in t and len(terms) > 1 else t for t in terms)
    stale_override: str | None = None
    override_note: str | None = None
    override = policy.overrides.get(_normalize(name))
    if override is not None and override.version not in (None, version):
        stale_override = f"override is for version {override.version}, installed {version}: review again"
        override = None
    if override is not None:
        concluded, override_note = override.license, override.justification
        evaluation = evaluate_license(concluded, policy)
    elif terms:
        concluded = declared
        evaluation = _evaluate_all(terms, policy)
    else:
        concluded = ""
        evaluation = _Evaluation(
            verdict="unknown", reasons=["no license in package metadata; add an override"]
        )
    reasons = list(evaluation.reasons) + ([stale_override] if stale_override else [])
    return ComponentLicense(
        name=name,
        version=version,
        purl=component.get("purl"),
        declared=declared,
        source=_property(component, "adas:license-source", "unknown"),
        concluded=concluded,
        verdict=evaluation.verdict,
        reasons=reasons,
        notes=list(dict.fromkeys(evaluation.notes)),
        override=override_note,
    )


def license_report(sbom: dict[str, Any] | Path, policy: LicensePolicy | None = None) -> LicenseReport:
    """Check every third-party component of a CycloneDX SBOM (a dict, or a path to its JSON)."""
    if not isinstance(sbom, dict):
        sbom = json.loads(Path(sbom).read_text())
    policy = policy or load_license_policy()
    components = sorted(
        (
            check_component(c, policy)
            for c in sbom.get("components", [])
            if c.get("type") not in _FIRST_PARTY_TYPES
        ),
        key=lambda c: (c.name, c.version),
    )
    counts = Counter(c.verdict for c in components)
    return LicenseReport(
        policy_version=policy.version,
        passed=counts["denied"] == 0 and counts["unknown"] == 0,
        counts={v: counts.get(v, 0) for v in ("allowed", "denied", "unknown")},
        components=components,
    )
