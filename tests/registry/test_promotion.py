"""Promotion end to end: governance -> lock -> plan -> rollout -> finalize -> hooks -> webhook,
refusals with reasons, crash-and-rerun, rollback."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adas.catalog import load_catalog
from adas.packaging.triton_server import default_triton_venv
from adas.packaging.trust import TRUST_FILE
from adas.registry.access_policy import readonly_iam_policy
from adas.registry.entries import entry_from_pack
from adas.registry.governance import verify_artifacts
from adas.registry.hooks import next_weekly_evaluation
from adas.registry.model_card import render_model_card
from adas.registry.nginx import nginx_available
from adas.registry.production import default_promotion_key
from adas.registry.promotion import SimulatedCrash, promote, rollback
from adas.registry.retention import prune_intermediates
from adas.registry.rollout.report import RolloutReport, StepRecord
from adas.registry.store import PromotionConflict
from adas.registry.webhook import SIGNATURE_HEADER, WebhookNotifier, verify_signature
from tests.registry.packs import build_pack
from tests.registry.receiver import Receiver
from tests.registry.world import TARGET, World, make_world

SECRET = "s3cr3t-for-tests"


def _stub_runner(outcome: str = "promoted"):  # type: ignore[no-untyped-def]
    """A rollout that does not start servers (crash/resume logic is what is under test)."""

    def run(plan, production, candidate, traffic, progress) -> RolloutReport:  # type: ignore[no-untyped-def]
        assert (production / "test-detector_engine" / "1" / "model.onnx").is_file()
        assert (candidate / "test-detector" / "config.pbtxt").is_file()
        steps = []
        for s in plan.steps:
            progress("step_passed", {"name": s.name, "weight": s.weight})
            steps.append(
                StepRecord(
                    name=s.name, weight=s.weight, mode=s.mode, generation=1, started_s=0, result="passed"
                )
            )
        return RolloutReport(
            outcome=outcome,  # type: ignore[arg-type]
            reason="stub",
            strategy=plan.strategy,
            target=plan.target,
            started_at=datetime.now(UTC),
            duration_s=1.0,
            steps=steps,
            intervals=[],
            requests={"sent": 10, "ok": 10, "failed": 0, "by_arm": {}, "failed_by_arm": {}},
            throughput_rps=10.0,
            dropped_requests=0,
            dropped_production_requests=0,
            reloads=len(steps),
            diff_clusters=[
                {"cluster": "scenario=merge, weather=fog", "mean_disagreement": 0.1, "missed": {"car": 2}}
            ],
        )

    return run


def _promote(world: World, key: str = "promo-1", **kw: Any):  # type: ignore[no-untyped-def]
    return promote(
        world.settings(kw.pop("notifier", None)),
        world.candidate,
        actor="release-manager",
        reason="weekly release",
        idempotency_key=key,
        traffic=world.traffic(),
        **kw,
    )


def test_refused_promotion_records_every_reason_and_moves_nothing(
    registry_url: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(registry_url, tmp_path, onnx_models, gate_green=False)
    result = _promote(world, runner=_stub_runner())
    assert result.status == "refused"
    unmet = {c.name for c in result.governance.unmet}  # type: ignore[union-attr]
    assert unmet == {
        "approval: technical",
        "approval: safety",
        "approval: security",
        "approval: product",
        "evaluation gate",
    }
    refused = world.registry.events(kinds=["promotion_refused"])
    assert len(refused) == 1 and "evaluation gate" in refused[0].reason
    assert world.registry.alias_entry(TARGET, "production").id == world.production.id
    assert world.registry.target_state(TARGET).active_promotion is None
    # The same request again records no second refusal.
    _promote(world, runner=_stub_runner())
    assert len(world.registry.events(kinds=["promotion_refused"])) == 1


@pytest.mark.parametrize(
    "crash_at", ["after_start", "mid_rollout", "after_rollout", "after_finalize", "after_hooks"]
)
def test_crash_mid_promotion_leaves_a_consistent_registry_that_a_rerun_completes(
    crash_at: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    with pytest.raises(SimulatedCrash):
        _promote(world, runner=_stub_runner(), crash_at=crash_at)
    reg = world.registry
    assert reg.consistency_problems() == []
    finalized = crash_at in ("after_finalize", "after_hooks")
    production = reg.alias_entry(TARGET, "production")
    assert production.id == (world.candidate.id if finalized else world.production.id)
    # Before finalize the promotion still holds the target; nobody else can move production.
    assert (reg.target_state(TARGET).active_promotion is None) == finalized
    result = _promote(world, runner=_stub_runner())
    assert result.status == "promoted", result.message
    assert reg.consistency_problems() == []
    aliases = reg.aliases(TARGET)
    assert aliases["production"].id == world.candidate.id and aliases["rollback"].id == world.production.id
    assert aliases["candidate"] is None and reg.target_state(TARGET).active_promotion is None
    assert len(reg.events(kinds=["promotion_completed"])) == 1
    for kind in (
        "release_notes_published",
        "access_policy_rendered",
        "mining_requested",
        "evaluation_scheduled",
        "retention_pruned",
    ):
        assert len(reg.events(kinds=[kind])) == 1, kind
    # A third run is a no-op.
    before = len(reg.events())
    assert _promote(world, runner=_stub_runner()).status == "promoted"
    assert len(reg.events()) == before


def test_crash_inside_the_finalize_transaction_rolls_it_back_entirely(
    registry_url: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(registry_url, tmp_path, onnx_models)
    world.approve_all()
    reg = world.registry
    inserted: list[str] = []

    @sa.event.listens_for(reg.engine, "before_cursor_execute")
    def _die(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("INSERT INTO registry_events") and "promotion_completed" in str(parameters):
            inserted.append("lead")
        if inserted and statement.startswith("UPDATE registry_aliases"):
            raise RuntimeError("power cut in the middle of the finalize transaction")

    with pytest.raises(RuntimeError, match="power cut"):
        _promote(world, runner=_stub_runner())
    sa.event.remove(reg.engine, "before_cursor_execute", _die)
    assert reg.consistency_problems() == []
    assert reg.alias_entry(TARGET, "production").id == world.production.id
    assert reg.events(kinds=["promotion_completed"]) == []
    assert reg.target_state(TARGET).active_promotion is not None
    assert _promote(world, runner=_stub_runner()).status == "promoted"
    assert reg.alias_entry(TARGET, "production").id == world.candidate.id
    assert reg.consistency_problems() == []


def test_second_promotion_of_the_same_target_conflicts_while_one_is_in_flight(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    with pytest.raises(SimulatedCrash):
        _promote(world, key="first", runner=_stub_runner(), crash_at="after_start")
    with pytest.raises(PromotionConflict, match="in flight"):
        _promote(world, key="second", runner=_stub_runner())
    # Rolling back a target with a stuck promotion aborts it; production never moved.
    result = rollback(
        world.settings(), TARGET, actor="oncall", reason="abandon the stuck release", idempotency_key="rb-1"
    )
    assert result.status == "aborted" and result.version == "1.2.0"
    assert world.registry.target_state(TARGET).active_promotion is None
    assert _promote(world, key="second", runner=_stub_runner()).status == "promoted"


def test_webhook_gets_every_event_signed_and_retries(tmp_path: Path, onnx_models: dict[str, Path]) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    with Receiver() as receiver:
        receiver.fail_next = 2  # the first event's first two attempts fail: retried, order kept
        notifier = WebhookNotifier(receiver.url, SECRET, world.policy.webhook, sleep=lambda s: None)
        result = _promote(world, runner=_stub_runner(), notifier=notifier)
        assert result.status == "promoted" and result.webhook["failed"] == 0
        ids = [e["id"] for e in receiver.events()]
        assert ids == [e.id for e in world.registry.events()]  # every event, in order, once
        for headers, body in receiver.requests:
            assert verify_signature(SECRET, headers, body)
            assert not verify_signature("wrong-secret", headers, body)
            assert {k.lower(): v for k, v in headers.items()}[SIGNATURE_HEADER.lower()].startswith("sha256=")
        kinds = [e["type"] for e in receiver.events()]
        assert "registry.promotion_completed" in kinds and "registry.alias_moved" in kinds
        attempts = world.registry.delivery_attempts(receiver.url)
        assert [a["ok"] for a in attempts[:3]] == [False, False, True]
        # Nothing pending: a second delivery sends nothing.
        assert notifier.deliver_pending(world.registry) == {"delivered": 0, "failed": 0}
    headers, body = receiver.requests[0]
    tampered = (
        body.replace(b"release-manager", b"someone-else") if b"release-manager" in body else body + b" "
    )
    assert not verify_signature(SECRET, headers, tampered)


def test_retention_never_touches_what_an_entry_points_to(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    store = world.store
    heavy = {}
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        heavy[version] = [
            store.put_bytes(f"models/vehicle-detection-2d/{version}/staging/environment.json", b"{}").key,
            store.put_bytes(
                f"models/vehicle-detection-2d/{version}/x86-cpu/fp32/predictions.json", b"[]"
            ).key,
        ]
    # An (odd) entry that points at a heavy file of an old version: it must survive.
    pinned = world.production.body.pointers.artifacts["engine"].key
    report = prune_intermediates(store, world.registry, world.policy.retention)
    assert set(report.deleted) == set(heavy["1.0.0"] + heavy["1.1.0"])
    for version in ("1.2.0", "1.3.0"):
        assert all(store.exists(k) for k in heavy[version])
    assert not any(store.exists(k) for k in heavy["1.0.0"])
    assert store.exists(pinned)
    for e in world.registry.entries():
        for p in e.body.pointers.artifacts.values():
            assert store.exists(p.key)
    store.put_bytes("models/vehicle-detection-2d/0.9.0/x86-cpu/fp32/predictions.json", b"[]")
    dry = prune_intermediates(store, world.registry, world.policy.retention, dry_run=True)
    assert dry.deleted == ["models/vehicle-detection-2d/0.9.0/x86-cpu/fp32/predictions.json"] and dry.dry_run
    assert store.exists(dry.deleted[0])


def test_retention_prunes_only_packs_no_entry_references(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    """Packs are write-once, so old versions gather packs nobody registered: those go; a pack an
    entry points to stays whole and verifiable, whatever its version; kept versions stay."""
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    store, keys = world.store, world.key_dir
    registered = build_pack(store, tmp_path / "b", keys, "1.0.0", onnx_models["agree"])
    body = entry_from_pack(
        store, registered.pack, registered.gate, registered.sim, registered.report, load_catalog()
    )
    old_entry, _ = world.registry.register(body, render_model_card(body), actor="ci")  # no alias holds it
    dangling = [
        build_pack(store, tmp_path / "b", keys, "1.1.0", onnx_models[m]).pack for m in ("agree", "disagree")
    ]
    kept = build_pack(store, tmp_path / "b", keys, "1.3.0", onnx_models["disagree"]).pack  # not registered
    report = prune_intermediates(store, world.registry, world.policy.retention)
    dangling_keys = [f.key for p in dangling for f in p.files.values()] + [p.manifest.key for p in dangling]
    assert sorted(report.deleted) == sorted(dangling_keys)
    manifests = [k for k in report.deleted if k.endswith("/pack_manifest.json")]
    assert report.deleted[: len(manifests)] == manifests  # a pack mid-prune never looks complete
    assert not any(store.exists(k) for k in dangling_keys)
    for pack in (registered.pack, kept):
        assert all(store.exists(f.key) for f in [*pack.files.values(), pack.manifest])
    assert set(report.protected) >= {f.key for f in registered.pack.files.values()}
    with tempfile.TemporaryDirectory() as tmp:
        check = verify_artifacts(store, old_entry.body, keys / TRUST_FILE, Path(tmp))
    assert check.ok and check.signed, check.signature_problems + check.hash_problems


def test_iam_policy_is_read_only_on_the_production_prefix(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    doc = readonly_iam_policy(world.candidate, world.policy.iam, bucket="prod-bucket", prefix="gold")
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    read = by_sid["ReadProductionPack"]
    assert read["Effect"] == "Allow" and all(a.startswith("s3:Get") for a in read["Action"])
    pack = world.candidate.body.pointers.pack_prefix  # the write-once pack folder of the entry
    assert pack.startswith("models/vehicle-detection-2d/1.3.0/x86-cpu/fp32/packs/")
    assert read["Resource"] == [f"arn:aws:s3:::prod-bucket/gold/{pack}/*"]
    allowed = [a for s in doc["Statement"] if s["Effect"] == "Allow" for a in s["Action"]]
    assert not any(a.startswith(("s3:Put", "s3:Delete")) for a in allowed)
    assert "s3:PutObject" in by_sid["DenyWritesToModelArtifacts"]["Action"]
    assert by_sid["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert json.loads(json.dumps(doc))["Version"] == "2012-10-17"


def test_next_weekly_evaluation_follows_the_schedule() -> None:
    wednesday = datetime(2025, 3, 12, 10, 0, tzinfo=UTC)
    assert next_weekly_evaluation(wednesday) == datetime(2025, 3, 16, 3, 0, tzinfo=UTC)
    sunday_late = datetime(2025, 3, 16, 4, 0, tzinfo=UTC)
    assert next_weekly_evaluation(sunday_late) == datetime(2025, 3, 23, 3, 0, tzinfo=UTC)


@pytest.mark.slow
@pytest.mark.skipif(
    not (default_triton_venv().exists() and nginx_available()), reason="needs .venv-triton and nginx"
)
def test_real_promotion_then_rollback(
    production_registry_url: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    """Governance, a real canary 1% -> 5% -> 25% -> 100% (Triton x2 + nginx), finalize, hooks, a
    signed webhook for every event, then the reverse promotion; the history shows every move."""
    world = make_world(production_registry_url, tmp_path, onnx_models)
    world.approve_all()
    reg = world.registry
    with Receiver() as receiver:
        notifier = WebhookNotifier(receiver.url, SECRET, world.policy.webhook)
        result = _promote(world, notifier=notifier)
        assert result.status == "promoted", result.message
        rollout = result.rollout
        assert rollout is not None and rollout.outcome == "promoted" and rollout.dropped_requests == 0
        assert [s.weight for s in rollout.steps] == [1, 5, 25, 100]
        aliases = reg.aliases(TARGET)
        assert (aliases["production"].version, aliases["rollback"].version) == ("1.3.0", "1.2.0")
        notes = Path(result.hooks["release_notes"].removeprefix("file://")).read_text()
        for link in ("Model card", "Evaluation summary", "Simulation verdict", "SBOM (CycloneDX)"):
            assert f"[{link}](file://" in notes
        assert "### Rollout PROMOTED" in notes and "### Governance PASSED" in notes
        mining = json.loads(Path(result.hooks["mining_request"].removeprefix("file://")).read_text())
        assert (
            mining["kind"] == "data_mining_request"
            and mining["regressed_slices"][0]["slice"] == "weather=fog"
        )
        assert mining["error_clusters"]
        for doc in ("plan.json", "argo_rollout.yaml", "sagemaker_deployment.json"):
            assert Path(result.documents[doc].removeprefix("file://")).is_file()
        steps = reg.events(kinds=["rollout_step"], promotion_id=result.promotion_id)
        assert len(steps) == 4
        back = rollback(
            world.settings(notifier),
            TARGET,
            actor="oncall",
            reason="fleet reports false braking",
            idempotency_key="rb-1",
        )
        assert back.status == "rolled_back" and back.version == "1.2.0"
        assert [e["id"] for e in receiver.events()] == [e.id for e in reg.events()]
    history = reg.history(TARGET)
    assert [c.to_entry_id for c in history.changes] == [
        world.production.id,
        world.candidate.id,
        world.production.id,
    ]
    assert [c.actor for c in history.changes] == ["system:adoption", "release-manager", "oncall"]
    assert reg.consistency_problems() == []


def test_default_key_resumes_replays_and_starts_afresh_after_a_rollback(
    tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    world = make_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, onnx_models)
    world.approve_all()
    reg = world.registry
    first = default_promotion_key(reg, world.candidate)
    assert first == f"promote:{TARGET}:1.3.0"
    with pytest.raises(SimulatedCrash):
        _promote(world, key=first, runner=_stub_runner(), crash_at="mid_rollout")
    assert default_promotion_key(reg, world.candidate) == first  # in flight: resume it
    assert _promote(world, key=first, runner=_stub_runner()).status == "promoted"
    assert default_promotion_key(reg, world.candidate) == first  # done: a replay is a no-op
    rollback(world.settings(), TARGET, actor="oncall", reason="revert", idempotency_key="rb-1")
    # The old key now only reports what happened; a fresh attempt gets a new key.
    stale = _promote(world, key=first, runner=_stub_runner())
    assert "has since moved to 1.2.0" in stale.message
    assert reg.alias_entry(TARGET, "production").version == "1.2.0"
    again = default_promotion_key(reg, world.candidate)
    assert again == f"promote:{TARGET}:1.3.0:attempt-2"
    assert _promote(world, key=again, runner=_stub_runner()).status == "promoted"
    assert reg.alias_entry(TARGET, "production").version == "1.3.0"
    assert reg.consistency_problems() == []
