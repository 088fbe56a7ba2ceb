"""Governance refuses an unsigned pack, a tampered artifact, a red gate and missing approvals,
each with its reason, and lists every unmet condition at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from adas.catalog import load_catalog
from adas.packaging.keys import rotate_local_keys
from adas.packaging.signing import PRIVATE_KEY_FILE, create_signing_key
from adas.packaging.trust import TRUST_FILE
from adas.registry.approvals import approve_entries
from adas.registry.config import load_policy
from adas.registry.entries import entry_from_pack
from adas.registry.governance import Condition, GovernanceRefused, check_governance, require_governance
from adas.registry.model_card import render_model_card
from adas.registry.models import ROLES, Entry
from adas.registry.store import RegistryStore
from adas.storage import LocalArtifactStore
from tests.registry.packs import Built, build_pack, local_signer

POLICY = load_policy().governance


def _register(registry: RegistryStore, store: LocalArtifactStore, built: Built) -> Entry:
    body = entry_from_pack(store, built.pack, built.gate, built.sim, built.report, load_catalog())
    entry, _ = registry.register(body, render_model_card(body), actor="ci")
    return entry


def _approve_all(registry: RegistryStore, entry: Entry, roles: tuple[str, ...] = ROLES) -> None:
    for role in roles:
        registry.approve(entry.id, role, actor=f"{role}-lead", reason=f"{role} review done")


def _check(registry: RegistryStore, store: LocalArtifactStore, entry: Entry, key_dir: Path, **kw):  # type: ignore[no-untyped-def]
    """Governance against the trust file of ``key_dir`` (where build_pack ran keys init)."""
    trusted = key_dir / TRUST_FILE
    return check_governance(registry, store, entry, trusted_keys=trusted, policy=POLICY, **kw)


def test_complete_entry_passes_and_card_is_generated(
    registry_url: str, artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(registry_url)
    built = build_pack(artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"])
    entry = _register(registry, artifact_store, built)
    _approve_all(registry, entry)
    report = _check(registry, artifact_store, entry, tmp_path / "keys")
    assert report.passed, report.summary()
    names = [c.name for c in report.conditions]
    for expected in ("approval: safety", "artifacts intact", "signatures (trusted keys)", "SBOM", "vulnerabilities",
                     "licenses", "evaluation gate", "simulation gate", "newer than production"):  # fmt: skip
        assert expected in names
    signatures = next(c.detail for c in report.conditions if c.name.startswith("sig"))
    key_id = local_signer(tmp_path / "keys").key_id
    assert "signed manifest and" in signatures and f"verified with trusted key {key_id}" in signatures
    card = entry.model_card
    assert card.startswith("# Model card: test-detector 1.3.0")
    assert "| weather=fog | yes | 35 |" in card and "abcdef0" in card and "sbom.cdx.json" in card
    body = entry.body
    assert body.pointers.container_tag == "adas-detector:1.3.0-abcdef0"
    assert body.pointers.wandb_artifact == "test-detector-x86-cpu-fp32:1.3.0"
    assert body.pointers.manifest is not None and "model.onnx.sig" in body.pointers.artifacts
    assert body.latency_budget_ms == {"p95": 25.0} and "x86-cpu/int8" in body.supported_targets
    assert body.slices[1].slice == "weather=fog" and body.slices[1].delta_points == pytest.approx(-10.0)
    require_governance(report)  # does not raise


def test_refusal_lists_every_unmet_condition(
    registry_url: str, artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(registry_url)
    built = build_pack(
        artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"],
        signed=False, gate_green=False, sim_green=False,
    )  # fmt: skip
    entry = _register(registry, artifact_store, built)
    _approve_all(registry, entry, roles=("technical", "security"))
    local_signer(tmp_path / "keys")  # a trusted key exists; the pack is not signed with it
    report = _check(registry, artifact_store, entry, tmp_path / "keys")
    unmet = {c.name: c.detail for c in report.unmet}
    assert set(unmet) == {
        "approval: safety",
        "approval: product",
        "signatures (trusted keys)",
        "evaluation gate",
        "simulation gate",
    }, report.summary()
    assert "pack_manifest.json is not signed" in unmet["signatures (trusted keys)"]
    assert "no safety approval recorded" in unmet["approval: safety"]
    assert unmet["evaluation gate"].startswith("RED for x86-cpu/fp32") and "mAP" in unmet["evaluation gate"]
    assert "collisions" in unmet["simulation gate"]
    with pytest.raises(GovernanceRefused) as info:
        require_governance(report)
    message = str(info.value)
    assert "5 unmet condition(s)" in message
    for name in unmet:
        assert name in message


def test_tampered_and_forged_artifacts_are_refused(
    artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}")
    built = build_pack(artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"])
    entry = _register(registry, artifact_store, built)
    _approve_all(registry, entry)
    root = Path(artifact_store.root)
    # 1. Bytes changed behind the store's back: the recorded hash catches it.
    cfg = root / built.pack.prefix / "inference_config.json"
    original = cfg.read_bytes()
    cfg.write_bytes(original.replace(b"0.3", b"0.01"))
    report = _check(registry, artifact_store, entry, tmp_path / "keys")
    unmet = {c.name: c.detail for c in report.unmet}
    assert (
        "inference_config.json: " in unmet["artifacts intact"]
        and "sha256 mismatch" in unmet["artifacts intact"]
    )
    # 2. A forger who also rewrites the hash record: the sha256 pinned in the entry catches it,
    #    and the signed manifest does too.
    artifact_store.put_bytes(f"{built.pack.prefix}/inference_config.json", original.replace(b"0.3", b"0.01"))
    report = _check(registry, artifact_store, entry, tmp_path / "keys")
    unmet = {c.name: c.detail for c in report.unmet}
    assert "inference_config.json" in unmet["artifacts intact"] and "expected" in unmet["artifacts intact"]
    assert set(unmet) == {"artifacts intact"}  # reported once, where the pinned read refused it
    # 3. A pack signed by somebody else's key (enrolled in their own trust file, not ours) is refused.
    artifact_store.put_bytes(f"{built.pack.prefix}/inference_config.json", original)
    other = build_pack(
        artifact_store, tmp_path / "other", tmp_path / "other-keys", "1.4.0", onnx_models["agree"]
    )
    entry2 = _register(registry, artifact_store, other)
    _approve_all(registry, entry2)
    report = _check(registry, artifact_store, entry2, tmp_path / "keys")
    sig = next(c for c in report.unmet if c.name == "signatures (trusted keys)")
    other_id = local_signer(tmp_path / "other-keys").key_id
    assert sig.detail == (
        f"pack_manifest.json: signed by key {other_id}, which is not in {tmp_path / 'keys' / TRUST_FILE}"
    )
    # Untouched again: the first entry passes.
    assert _check(registry, artifact_store, entry, tmp_path / "keys").passed


def test_unscanned_pack_needs_a_written_waiver(
    artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}")
    built = build_pack(
        artifact_store, tmp_path, tmp_path / "keys", "2.0.0", onnx_models["agree"], scanned=False
    )
    entry = _register(registry, artifact_store, built)
    _approve_all(registry, entry)

    def vuln() -> tuple[bool, str]:
        c = next(
            c
            for c in _check(registry, artifact_store, entry, tmp_path / "keys").conditions
            if c.name == "vulnerabilities"
        )
        return c.met, c.detail

    met, detail = vuln()
    assert not met and "not scanned" in detail and "no waiver" in detail
    registry.waive_vulnerabilities(entry.id, actor="sec", justification="ok")
    met, detail = vuln()
    assert not met and "shorter than 40 characters" in detail
    text = (
        "Offline build: Trivy DB unavailable; SBOM reviewed manually against NVD on 2025-03-01, no criticals."
    )
    registry.waive_vulnerabilities(entry.id, actor="sec-lead", justification=text)
    met, detail = vuln()
    assert met and "WAIVED by sec-lead" in detail and "reviewed manually" in detail


def test_older_version_than_production_is_a_rollback_not_a_promotion(
    artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}")
    new = _register(
        registry,
        artifact_store,
        build_pack(artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"]),
    )
    old = _register(
        registry,
        artifact_store,
        build_pack(artifact_store, tmp_path, tmp_path / "keys", "1.2.0", onnx_models["agree"]),
    )
    registry.change_target(
        "x86-cpu/fp32",
        kind="adopted",
        actor="ops",
        reason="baseline",
        idempotency_key="a",
        moves={"production": new.id},
    )
    _approve_all(registry, old)
    report = _check(registry, artifact_store, old, tmp_path / "keys")
    assert [c.name for c in report.unmet] == ["newer than production"]
    assert "use rollback" in report.unmet[0].detail
    assert json.loads(report.model_dump_json())["conditions"]


def test_amber_verdict_is_accepted_only_by_an_approval_quoting_its_intervals(
    artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}")
    built = build_pack(artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"])
    body = entry_from_pack(artifact_store, built.pack, built.gate, built.sim, built.report, load_catalog())
    quote = "weather=fog AP -0.80 [-2.10, +0.40] (n = 35)"
    assert body.evaluation is not None
    amber = body.evaluation.model_copy(
        update={"passed": False, "amber": [quote], "rationale": f"AMBER (insufficient evidence): {quote}"}
    )
    body = body.model_copy(update={"evaluation": amber})
    entry, _ = registry.register(body, render_model_card(body), actor="ci")
    assert entry.body.evaluation is not None and entry.body.evaluation.status == "amber"
    assert "AMBER for x86-cpu/fp32 (insufficient evidence: weather=fog AP" in entry.model_card
    _approve_all(registry, entry)

    def evaluation_gate():  # type: ignore[no-untyped-def]
        report = _check(registry, artifact_store, entry, tmp_path / "keys")
        return next(c for c in report.conditions if c.name == "evaluation gate"), report

    cond, report = evaluation_gate()
    assert not cond.met and not report.passed
    assert "AMBER (insufficient evidence)" in cond.detail and quote in cond.detail
    assert "--accept-amber" in cond.detail
    # The product role may not accept evidence; a safety acceptance must quote the interval whole.
    registry.accept_amber(entry.id, role="product", actor="pm", quote=quote, reason="ship it")
    assert not evaluation_gate()[0].met
    registry.accept_amber(
        entry.id, role="safety", actor="s", quote="weather=fog AP -0.80", reason="close enough"
    )
    cond, _ = evaluation_gate()
    assert not cond.met and "does not quote the current intervals" in cond.detail
    approve_entries(
        registry,
        [entry],
        role="safety",
        actor="safety-lead",
        reason="fog re-checked on 240 held-out frames: no regression",
        accept_amber=f"accepting {quote}",
    )
    cond, report = evaluation_gate()
    assert cond.met and "AMBER accepted by safety-lead (safety)" in cond.detail and quote in cond.detail
    assert report.passed, report.summary()
    assert registry.consistency_problems() == []


def test_verdicts_without_amber_serialize_as_before() -> None:
    """Entries registered before three-valued gates must keep their digests: an empty
    ``amber`` (and an empty slice interval) is not part of the serialized body."""
    from adas.registry.models import SliceRow, Verdict

    v = Verdict(
        kind="evaluation", passed=True, version="1.0.0", device="x86-cpu", precision="fp32", rationale="ok"
    )
    assert "amber" not in v.model_dump() and "amber" not in v.model_dump_json()
    assert "amber" in v.model_copy(update={"amber": ["all AP +0.1 [-1, +1] (n = 9)"]}).model_dump()
    assert "delta_interval" not in SliceRow(slice="fog", AP=0.5, images=40).model_dump()


def _signatures(registry: RegistryStore, store: LocalArtifactStore, entry: Entry, key_dir: Path) -> Condition:
    report = _check(registry, store, entry, key_dir)
    assert [c.name for c in report.unmet] in ([], ["signatures (trusted keys)"]), report.summary()
    return next(c for c in report.conditions if c.name == "signatures (trusted keys)")


def test_pack_signed_by_a_freshly_generated_key_is_refused_naming_it(
    registry_url: str, artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    """A well-formed, self-consistent pack (its cosign.pub matches every signature) by a key made
    on the spot: the trust root does not list it, so governance refuses it by key id."""
    registry = RegistryStore(registry_url)
    local_signer(tmp_path / "keys")  # keys init: the trust root lists the local key only
    fresh = create_signing_key(tmp_path / "fresh" / PRIVATE_KEY_FILE)
    built = build_pack(
        artifact_store, tmp_path, tmp_path / "keys", "1.3.0", onnx_models["agree"], signer=fresh
    )
    entry = _register(registry, artifact_store, built)
    _approve_all(registry, entry)
    sig = _signatures(registry, artifact_store, entry, tmp_path / "keys")
    assert not sig.met
    assert (
        sig.detail
        == f"pack_manifest.json: signed by key {fresh.key_id}, which is not in {tmp_path / 'keys' / TRUST_FILE}"
    )


def test_rotation_old_packs_pass_new_packs_carry_the_new_key(
    artifact_store: LocalArtifactStore, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    registry = RegistryStore(f"sqlite:///{tmp_path / 'r.db'}")
    keys = tmp_path / "keys"
    old = _register(
        registry, artifact_store, build_pack(artifact_store, tmp_path, keys, "1.3.0", onnx_models["agree"])
    )
    old_key = local_signer(keys).key_id
    change = rotate_local_keys(keys, keys / TRUST_FILE)
    assert change.retired_key_id == old_key and change.key_id != old_key
    new = _register(
        registry, artifact_store, build_pack(artifact_store, tmp_path, keys, "1.4.0", onnx_models["agree"])
    )
    for entry, key_id in ((old, old_key), (new, change.key_id)):
        _approve_all(registry, entry)
        manifest = json.loads(artifact_store.get_bytes(entry.body.pointers.manifest.key))  # type: ignore[union-attr]
        assert manifest["signing"]["key_id"] == key_id
        sig = _signatures(registry, artifact_store, entry, keys)
        assert sig.met and f"verified with trusted key {key_id}" in sig.detail
    # A leaked key is revoked: everything it signed is refused, naming it; the new key's packs pass.
    body = yaml.safe_load((keys / TRUST_FILE).read_text())
    next(k for k in body["keys"] if k["key_id"] == old_key)["revoked"] = True
    (keys / TRUST_FILE).write_text(yaml.safe_dump(body))
    sig = _signatures(registry, artifact_store, old, keys)
    assert (
        not sig.met
        and sig.detail
        == f"pack_manifest.json: signed by key {old_key}, which is revoked in {keys / TRUST_FILE}"
    )
    assert _signatures(registry, artifact_store, new, keys).met
