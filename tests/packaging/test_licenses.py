"""License policy: verdicts per component, overrides, readable config errors, the real env."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from adas.config_errors import ConfigError
from adas.packaging.licenses import LICENSES_FILE, LicensePolicy, license_report, load_license_policy
from adas.packaging.sbom import build_sbom


@pytest.fixture(scope="module")
def policy() -> LicensePolicy:
    return load_license_policy()


def _lib(name: str, *licenses: dict[str, Any], version: str = "1.0") -> dict[str, Any]:
    comp: dict[str, Any] = {
        "type": "library",
        "name": name,
        "version": version,
        "purl": f"pkg:pypi/{name}@{version}",
    }
    if licenses:
        comp["licenses"] = list(licenses)
    return comp


def _expr(text: str) -> dict[str, Any]:
    return {"expression": text}


def _id(spdx: str) -> dict[str, Any]:
    return {"license": {"id": spdx}}


def _name(text: str) -> dict[str, Any]:
    return {"license": {"name": text}}


def _verdicts(policy: LicensePolicy, *components: dict[str, Any]) -> dict[str, str]:
    report = license_report({"components": list(components)}, policy)
    return {c.name: c.verdict for c in report.components}


def test_shipped_policy_loads(policy: LicensePolicy) -> None:
    assert policy.version == 1
    allowed = {e.match for e in policy.allowed}
    assert {"MIT", "Apache-2.0", "BSD-*-Clause", "PSF-2.0", "ISC", "MPL-2.0", "LGPL-*"} <= allowed
    assert {"AGPL-*", "SSPL-*"} <= {e.match for e in policy.denied}
    assert all(len(o.justification) >= 20 for o in policy.overrides.values())


@pytest.mark.parametrize(
    ("licenses", "verdict"),
    [
        ([_id("MIT")], "allowed"),
        ([_expr("BSD-3-Clause AND 0BSD AND MIT AND Zlib AND CC0-1.0")], "allowed"),
        ([_expr("Apache-2.0 AND Apache-2.0 WITH LLVM-exception AND BSL-1.0")], "allowed"),
        ([_expr("GPL-3.0-only OR MIT")], "allowed"),  # we may choose the MIT branch
        ([_expr("(MIT OR GPL-2.0-only) AND AGPL-3.0-only")], "denied"),
        ([_expr("MIT AND GPL-2.0-only")], "denied"),
        ([_expr("GPL-2.0-only WITH Classpath-exception-2.0")], "denied"),  # judged on its base license
        ([_id("AGPL-3.0-or-later")], "denied"),
        ([_id("SSPL-1.0")], "denied"),
        ([_name("Apache 2.0")], "allowed"),  # alias
        ([_name("Apache Software License"), _name("BSD License")], "allowed"),  # families, read as AND
        ([_name("BSD License"), _id("AGPL-3.0-only")], "denied"),
        ([_name("GNU Library or Lesser General Public License (LGPL)")], "allowed"),
        ([_name("Some Custom License v1")], "unknown"),
        ([_expr("MIT AND")], "unknown"),  # unparsable
        ([], "unknown"),
    ],
)
def test_component_verdicts(policy: LicensePolicy, licenses: list[dict[str, Any]], verdict: str) -> None:
    assert _verdicts(policy, _lib("pkg", *licenses))["pkg"] == verdict


def test_passed_requires_no_denied_and_no_unknown(policy: LicensePolicy) -> None:
    ok = license_report({"components": [_lib("a", _id("MIT")), _lib("b", _id("Apache-2.0"))]}, policy)
    assert ok.passed and ok.counts == {"allowed": 2, "denied": 0, "unknown": 0}
    unknown = license_report({"components": [_lib("a", _id("MIT")), _lib("mystery")]}, policy)
    assert not unknown.passed and [c.name for c in unknown.failures] == ["mystery"]
    assert "no license in package metadata" in unknown.failures[0].reasons[0]
    denied = license_report({"components": [_lib("a", _id("AGPL-3.0-only"))]}, policy)
    assert not denied.passed and denied.counts["denied"] == 1
    assert "Network copyleft" in denied.components[0].reasons[0]


def test_pack_files_are_first_party(policy: LicensePolicy) -> None:
    sbom = {
        "components": [
            {"type": "machine-learning-model", "name": "model.onnx"},
            {"type": "file", "name": "x"},
        ]
    }
    report = license_report(sbom, policy)
    assert report.components == [] and report.passed


def test_overrides(policy: LicensePolicy) -> None:
    # faster-coco-eval ships no license metadata; the shipped policy concludes Apache-2.0.
    report = license_report({"components": [_lib("faster_coco_eval", version="1.8.0")]}, policy)
    (comp,) = report.components
    assert comp.verdict == "allowed" and comp.concluded == "Apache-2.0"
    assert comp.override and "LICENSE" in comp.override
    assert report.passed

    custom = LicensePolicy.model_validate(
        {
            **policy.model_dump(),
            "overrides": {
                "pinned": {
                    "license": "MIT",
                    "justification": "LICENSE file in the sdist is MIT text.",
                    "version": "2.0",
                },
                "bad-conclusion": {
                    "license": "AGPL-3.0-only",
                    "justification": "Upstream LICENSE file is AGPL.",
                },
            },
        }
    )
    report = license_report({"components": [_lib("pinned", version="2.0")]}, custom)
    assert report.components[0].verdict == "allowed"
    # A version-pinned override does not carry over to another release.
    stale = license_report({"components": [_lib("pinned", version="3.0")]}, custom).components[0]
    assert stale.verdict == "unknown" and any("review again" in r for r in stale.reasons)
    # An override concludes a license; it cannot make a denied license acceptable.
    assert _verdicts(custom, _lib("bad-conclusion"))["bad-conclusion"] == "denied"


def test_markdown_summary(policy: LicensePolicy) -> None:
    report = license_report(
        {
            "components": [
                _lib("good", _id("MIT")),
                _lib("lgpl-lib", _id("LGPL-2.1-only")),
                _lib("weird", _name("Mine | Yours")),
                _lib("faster-coco-eval", version="1.8.0"),
            ]
        },
        policy,
    )
    md = report.to_markdown()
    assert md.startswith("### Third-party licenses: FAILED")
    assert "#### Needs attention" in md and "Mine \\| Yours" in md  # pipes escaped for the UI
    assert "#### Overrides applied" in md and "faster-coco-eval" in md
    assert "#### Obligations" in md and "dynamically linked" in md
    assert "| good | 1.0 | MIT | allowed |" in md


def _write_policy(tmp_path: Path, mutate: Any) -> Path:
    raw = yaml.safe_load(LICENSES_FILE.read_text())
    mutate(raw)
    path = tmp_path / "licenses.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_invalid_policy_errors_are_readable(tmp_path: Path) -> None:
    def no_justification(raw: dict[str, Any]) -> None:
        raw["overrides"]["faster-coco-eval"].pop("justification")

    with pytest.raises(ConfigError) as exc:
        load_license_policy(_write_policy(tmp_path, no_justification))
    assert "licenses.yaml" in str(exc.value) and "overrides.faster-coco-eval.justification" in str(exc.value)

    def conflict(raw: dict[str, Any]) -> None:
        raw["denied"].append({"match": "mit"})

    with pytest.raises(ConfigError, match=r"both allowed and denied: \['mit'\]"):
        load_license_policy(_write_policy(tmp_path, conflict))

    def bad_override(raw: dict[str, Any]) -> None:
        raw["overrides"]["x"] = {"license": "MIT AND (", "justification": "a long enough justification"}

    with pytest.raises(ConfigError, match=r"overrides\.x\.license"):
        load_license_policy(_write_policy(tmp_path, bad_override))

    def wrong_version(raw: dict[str, Any]) -> None:
        raw["version"] = 2

    with pytest.raises(ConfigError, match="version"):
        load_license_policy(_write_policy(tmp_path, wrong_version))


def test_deny_wins_over_a_broad_allow(tmp_path: Path) -> None:
    def allow_everything(raw: dict[str, Any]) -> None:
        raw["allowed"].append({"match": "*"})

    broad = load_license_policy(_write_policy(tmp_path, allow_everything))
    assert _verdicts(broad, _lib("a", _id("AGPL-3.0-only")), _lib("b", _name("Whatever"))) == {
        "a": "denied",
        "b": "allowed",
    }


def test_current_serving_environment_passes(policy: LicensePolicy, tmp_path: Path) -> None:
    """This project's own environment must satisfy its policy (add overrides when it does not)."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"onnx")
    sbom = build_sbom({"model.onnx": model}, component_name="det", version="1.0.0", serving_env="current")
    report = license_report(sbom, policy)
    assert report.passed, report.to_markdown().split("#### All components")[0]
    assert len(report.components) == sum(c["type"] == "library" for c in sbom["components"])
