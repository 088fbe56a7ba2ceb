"""The inbox sensor on a temporary instance: it lists and schedules; intake runs take good bundles in
exactly once and set bad ones aside with the reason."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import boto3
import dagster as dg
import pytest
from dagster_aws.s3 import S3Resource

from adas.intake.refs import CandidateRef
from adas.settings import AdasHome
from adas.storage import LocalArtifactStore, S3ArtifactStore
from adas_assets.definitions import make_definitions
from resources import build_resources, registry_resource
from resources.inbox import REASON_FILE, LocalInbox, S3Inbox
from resources.io_manager import ArtifactJsonIOManager, decode_value
from resources.oci_registry import oci_registry_resource
from resources.simulation_shards import SimulationShardRunner
from sensors.candidate_inbox import candidate_inbox_sensor

CANDIDATE = dg.AssetKey("candidate_checkpoint")


def _tick(defs: dg.Definitions, instance: dg.DagsterInstance, cursor: str | None):  # type: ignore[no-untyped-def]
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, definitions=defs, resources=defs.resources
    ) as ctx:
        result = candidate_inbox_sensor(ctx)
        return result, ctx.cursor if not isinstance(result, dg.SensorResult) else result.cursor


def _run(
    defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("candidate_intake")
    return job.execute_in_process(
        run_config=request.run_config, instance=instance, tags=request.tags, raise_on_error=False
    )


@pytest.fixture
def local_defs(adas_home: Path) -> dg.Definitions:
    resources = build_resources("local", AdasHome(adas_home))
    resources["inbox"] = LocalInbox(path=str(adas_home / "inbox"), settle_seconds=0)
    return make_definitions(resources)


def test_good_bundle_is_materialized_exactly_once(adas_home: Path, local_defs, make_bundle) -> None:  # type: ignore[no-untyped-def]
    inbox = adas_home / "inbox"
    make_bundle(inbox, "detector-0.1.0")
    with dg.instance_for_test() as instance:
        result, cursor = _tick(local_defs, instance, None)
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
        request = result.run_requests[0]
        sha = request.run_key
        # The same bundle, still waiting for its run, is not requested twice.
        again, cursor = _tick(local_defs, instance, cursor)
        assert isinstance(again, dg.SkipReason) and "waiting for its intake run" in again.skip_message

        run = _run(local_defs, instance, request)
        assert run.success
        event = instance.get_latest_materialization_event(CANDIDATE)
        assert event is not None
        mat = event.asset_materialization
        sha = request.tags["adas/bundle_sha256"]
        assert mat.tags["dagster/data_version"] == sha and len(sha) == 64
        assert mat.metadata["version"].value == "0.1.0"
        assert mat.metadata["git_sha"].value == "abcdef0"
        assert not (inbox / "detector-0.1.0").exists()
        assert [p.name.startswith("0.1.0-") for p in (inbox / "accepted").iterdir()] == [True]

        # The stored value downstream assets receive: every file hashed and verifiable.
        ref = ArtifactJsonIOManager(store=LocalArtifactStore(root=str(adas_home / "artifacts")))
        stored = _load_candidate(ref)
        assert stored.bundle_sha256 == sha
        store = LocalArtifactStore(root=str(adas_home / "artifacts"))
        for f in stored.files.values():
            assert store.recorded_sha256(f.key) == f.sha256

        # Nothing new: the tick says so. The same bundle dropped again: its run files it as a
        # duplicate and stores nothing new.
        idle, cursor = _tick(local_defs, instance, cursor)
        assert isinstance(idle, dg.SkipReason) and "no new bundles" in idle.skip_message
        make_bundle(inbox, "same-bundle-renamed")
        dup, cursor = _tick(local_defs, instance, cursor)
        assert isinstance(dup, dg.SensorResult) and len(dup.run_requests) == 1
        assert _run(local_defs, instance, dup.run_requests[0]).success
        assert not (inbox / "same-bundle-renamed").exists()
        assert len(list((inbox / "accepted").iterdir())) == 2


def _load_candidate(io: ArtifactJsonIOManager) -> CandidateRef:
    return decode_value(io.store.get_bytes("asset-values/candidate_checkpoint/value.json"))


def test_bad_bundle_moves_to_rejected_with_reason_and_nothing_lost(
    adas_home: Path, local_defs, make_bundle
) -> None:  # type: ignore[no-untyped-def]
    inbox = adas_home / "inbox"
    bad = make_bundle(inbox, "broken")
    (bad / "contract.yaml").write_text(
        (bad / "contract.yaml").read_text().replace("version: 0.1.0", "version: one")
    )
    files_before = sorted(p.name for p in bad.iterdir())
    with dg.instance_for_test() as instance:
        result, _ = _tick(local_defs, instance, None)
        # The tick moves nothing: the run does, and records why.
        assert isinstance(result, dg.SensorResult) and (inbox / "broken").is_dir()
        run = _run(local_defs, instance, result.run_requests[0])
    assert not run.success
    failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
    assert "contract.yaml: version" in str(failure.event_specific_data.error.message)  # type: ignore[union-attr]
    (moved,) = list((inbox / "rejected").iterdir())
    assert sorted(p.name for p in moved.iterdir()) == sorted([*files_before, REASON_FILE])
    reason = (moved / REASON_FILE).read_text()
    assert "field: contract.yaml: version" in reason and "'one' is not a semantic version" in reason


def test_one_bad_bundle_does_not_stop_the_tick(adas_home: Path, local_defs, make_bundle) -> None:  # type: ignore[no-untyped-def]
    """A looping symlink, a dangling one and a FIFO beside a good bundle: every drop gets its run
    on the same tick, the good one is taken in, and the tick itself changed nothing."""
    inbox = adas_home / "inbox"
    make_bundle(inbox, "a-good")
    loop = make_bundle(inbox, "b-looping-link")
    (loop / "self").symlink_to(loop / "self")
    dangling = make_bundle(inbox, "c-dangling-link")
    (dangling / "gone").symlink_to(dangling / "nowhere")
    fifo = make_bundle(inbox, "d-fifo")
    os.mkfifo(fifo / "pipe")
    (inbox / "e-symlinked-bundle").symlink_to(fifo)
    before = _tree(inbox)
    with dg.instance_for_test() as instance:
        result, _ = _tick(local_defs, instance, None)
        assert _tree(inbox) == before, "a tick must not change the inbox"
        assert isinstance(result, dg.SensorResult)
        requested = {r.tags["adas/bundle"]: r for r in result.run_requests}
        assert sorted(requested) == [
            "a-good",
            "b-looping-link",
            "c-dangling-link",
            "d-fifo",
            "e-symlinked-bundle",
        ]
        assert _run(local_defs, instance, requested["a-good"]).success
        reasons = {}
        for name in ("b-looping-link", "c-dangling-link", "d-fifo", "e-symlinked-bundle"):
            run = _run(local_defs, instance, requested[name])
            assert not run.success
            failure = next(e for e in run.all_events if e.event_type_value == "STEP_FAILURE")
            reasons[name] = failure.event_specific_data.error.to_string()  # type: ignore[union-attr]
    assert "self: is a symbolic link" in reasons["b-looping-link"]
    assert "gone: is a symbolic link" in reasons["c-dangling-link"]
    assert "pipe: is a FIFO" in reasons["d-fifo"]
    assert "e-symlinked-bundle is a symbolic link" in reasons["e-symlinked-bundle"]
    rejected = sorted(p.name.rsplit("-", 1)[0] for p in (inbox / "rejected").iterdir())
    assert rejected == ["b-looping-link", "c-dangling-link", "d-fifo", "e-symlinked-bundle"]
    assert [p.name.startswith("0.1.0-") for p in (inbox / "accepted").iterdir()] == [True]


def _tree(root: Path) -> list[tuple[str, int, int]]:
    """Every entry under ``root`` (links not followed) with its size and modification time."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            st = os.lstat(Path(dirpath) / name)
            out.append((str(Path(dirpath, name).relative_to(root)), st.st_size, st.st_mtime_ns))
    return sorted(out)


def test_a_different_bundle_cannot_reuse_a_version(adas_home: Path, local_defs, make_bundle) -> None:  # type: ignore[no-untyped-def]
    inbox = adas_home / "inbox"
    make_bundle(inbox, "first")
    with dg.instance_for_test() as instance:
        result, cursor = _tick(local_defs, instance, None)
        assert _run(local_defs, instance, result.run_requests[0]).success
        second = make_bundle(inbox, "second")
        (second / "lineage.json").write_text(
            (second / "lineage.json").read_text().replace("test-run", "other-run")
        )
        result, _ = _tick(local_defs, instance, cursor)
        run = _run(local_defs, instance, result.run_requests[0])
    assert not run.success
    (moved,) = list((inbox / "rejected").iterdir())
    assert moved.name.startswith("second-")
    assert "0.1.0 is already taken by bundle" in (moved / REASON_FILE).read_text()


def test_bundle_still_being_copied_is_left_alone(adas_home: Path, make_bundle) -> None:  # type: ignore[no-untyped-def]
    inbox = LocalInbox(path=str(adas_home / "inbox"), settle_seconds=60)
    make_bundle(adas_home / "inbox", "fresh")
    make_bundle(adas_home / "inbox", ".hidden-in-progress")
    assert inbox.pending() == []
    old = time.time() - 120
    for p in [adas_home / "inbox" / "fresh", *(adas_home / "inbox" / "fresh").iterdir()]:
        os.utime(p, (old, old))
    assert [i.name for i in inbox.pending()] == ["fresh"]


def test_s3_inbox_and_store_take_in_and_reject(s3_env: str, tmp_path: Path, make_bundle) -> None:  # type: ignore[no-untyped-def]
    bucket = f"adas-{os.urandom(4).hex()}"
    client = boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    s3 = S3Resource(endpoint_url=s3_env, region_name="us-east-1")
    store = S3ArtifactStore(s3.get_client, bucket=bucket, prefix="gold", cache_dir=str(tmp_path / "cache"))
    defs = make_definitions(
        {
            "artifact_store": store,
            "inbox": S3Inbox(s3=s3, bucket=bucket, prefix="inbox", settle_seconds=0),
            "io_manager": ArtifactJsonIOManager(store=store),
            "registry": registry_resource("local", AdasHome(tmp_path / "home")),
            "oci_registry": oci_registry_resource("local", AdasHome(tmp_path / "home")),
            "sim_shards": SimulationShardRunner(mode="local"),
        }
    )
    good, bad = make_bundle(name="good"), make_bundle(name="bad")
    (bad / "lineage.json").unlink()
    for folder in (good, bad):
        for f in folder.iterdir():
            client.upload_file(str(f), bucket, f"inbox/{folder.name}/{f.name}")
    shutil.rmtree(good)
    with dg.instance_for_test() as instance:
        result, _ = _tick(defs, instance, None)
        assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 2
        runs = {r.tags["adas/bundle"]: _run(defs, instance, r) for r in result.run_requests}
        assert runs["good"].success and not runs["bad"].success
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(
        k.startswith("gold/candidates/vehicle-detection-2d/0.1.0/") and k.endswith("model.pt2") for k in keys
    )
    assert any(k.startswith("inbox/rejected/bad-") and k.endswith(REASON_FILE) for k in keys)
    assert any(k.startswith("inbox/accepted/0.1.0-") and k.endswith("model.pt2") for k in keys)
    assert not any(k.startswith(("inbox/good/", "inbox/bad/")) for k in keys)


def test_sensor_preview_leaves_the_inbox_byte_identical(adas_home: Path, make_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """`dagster sensor preview` evaluates the real sensor in the real code location: it may say
    what it would request, and must not move, write or delete a bundle (good or bad)."""
    inbox = adas_home / "inbox"
    good = make_bundle(inbox, "good")
    bad = make_bundle(inbox, "bad")
    (bad / "lineage.json").unlink()
    old = time.time() - 120
    for p in [good, bad, *good.iterdir(), *bad.iterdir()]:
        os.utime(p, (old, old))
    before = [(p, p.read_bytes()) for p in sorted(inbox.rglob("*")) if p.is_file()]
    env = {**os.environ, "ADAS_HOME": str(adas_home), "DAGSTER_HOME": str(tmp_path / "dagster")}
    (tmp_path / "dagster").mkdir()
    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "sensor",
            "preview",
            "candidate_inbox_sensor",
            "-w",
            "workspace.yaml",
        ],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "good" in out.stdout and "bad" in out.stdout, out.stdout[-2000:]
    after = [(p, p.read_bytes()) for p in sorted(inbox.rglob("*")) if p.is_file()]
    assert after == before
    assert not any((inbox / "rejected").iterdir()) and not any((inbox / "accepted").iterdir())
