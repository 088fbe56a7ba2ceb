import errno
import os
import re
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
from dagster_aws.s3 import S3Resource

from adas.config_errors import ConfigError
from adas.storage import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    ArtifactWriteError,
    LocalArtifactStore,
    S3ArtifactStore,
    S3ClientConfig,
    load_storage_config,
    s3_client,
    sha256_bytes,
)
from tests.foundation.faulty_s3 import FaultPlan, FaultyS3, faulty_s3


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "local":
        return LocalArtifactStore(root=str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("s3_env")
    bucket = f"adas-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return S3ArtifactStore(
        S3Resource(endpoint_url=endpoint, region_name="us-east-1").get_client,
        bucket=bucket,
        prefix="gold",
        cache_dir=str(tmp_path / "cache"),
    )


def _tamper(store: ArtifactStore, key: str, data: bytes) -> None:
    """Change stored bytes behind the store's back, keeping the recorded hash."""
    if isinstance(store, LocalArtifactStore):
        (Path(store.root) / key).write_bytes(data)
    else:
        client = store.client
        obj_key = f"gold/{key}"
        meta = client.head_object(Bucket=store.bucket, Key=obj_key)["Metadata"]
        client.put_object(Bucket=store.bucket, Key=obj_key, Body=data, Metadata=meta)


def test_round_trip_records_and_verifies_sha256(store: ArtifactStore, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    stored = store.put_file("models/det/1.0.0/x86-cpu/fp32/model.onnx", src)
    assert stored.sha256 == sha256_bytes(data) and stored.size == len(data)
    assert store.recorded_sha256(stored.key) == stored.sha256
    assert store.get_bytes(stored.key, expected_sha256=stored.sha256) == data
    assert store.fetch(stored.key).read_bytes() == data
    assert store.exists(stored.key) and not store.exists("models/det/1.0.0/missing.bin")
    assert store.list_keys("models/det/") == [stored.key]
    assert stored.uri.endswith("models/det/1.0.0/x86-cpu/fp32/model.onnx")


def test_truncated_artifact_raises_naming_file_and_both_hashes(store: ArtifactStore) -> None:
    data = b"x" * 10_000
    stored = store.put_bytes("models/det/1.0.0/x86-cpu/int8/calibration.cache", data)
    _tamper(store, stored.key, data[:5000])
    truncated = sha256_bytes(data[:5000])
    for read in (store.get_bytes, store.fetch):
        with pytest.raises(ArtifactIntegrityError) as info:
            read(stored.key)
        msg = str(info.value)
        assert "calibration.cache" in msg and stored.sha256 in msg and truncated in msg
        assert "5000 bytes" in msg


def test_tampered_artifact_and_wrong_expected_hash(store: ArtifactStore) -> None:
    stored = store.put_bytes("reports/eval_report.json", b'{"ap": 0.61}')
    with pytest.raises(ArtifactIntegrityError, match=r"expected 0{64}"):
        store.get_bytes(stored.key, expected_sha256="0" * 64)
    _tamper(store, stored.key, b'{"ap": 0.99}')
    with pytest.raises(ArtifactIntegrityError, match=r"eval_report\.json: sha256 mismatch"):
        store.get_bytes(stored.key)


def test_missing_artifact_and_bad_keys(store: ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match="no such artifact"):
        store.get_bytes("models/none.bin")
    for bad in ("../escape", "/abs/path", "a//b", "models/x.sha256", ""):
        with pytest.raises(ValueError, match="invalid artifact key"):
            store.put_bytes(bad, b"1")


def test_overwrite_replaces_content_and_hash(store: ArtifactStore) -> None:
    store.put_bytes("asset-values/x/value.json", b"one")
    second = store.put_bytes("asset-values/x/value.json", b"two")
    assert store.get_bytes("asset-values/x/value.json", expected_sha256=second.sha256) == b"two"


def test_put_tree_and_fetch_tree(store: ArtifactStore, tmp_path: Path) -> None:
    src = tmp_path / "bundle"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("a")
    (src / "sub" / "b.txt").write_text("b")
    stored = store.put_tree("candidates/det/1.0.0/abc", src)
    assert [s.key for s in stored] == ["candidates/det/1.0.0/abc/a.txt", "candidates/det/1.0.0/abc/sub/b.txt"]
    out = store.fetch_tree("candidates/det/1.0.0/abc", tmp_path / "out")
    assert (out / "sub" / "b.txt").read_text() == "b"
    with pytest.raises(ArtifactNotFoundError):
        store.fetch_tree("candidates/none")


def test_local_write_is_atomic_when_it_fails_before_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that dies after the bytes hit disk but before the rename leaves the old version."""
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    store.put_bytes("models/m.bin", b"old-version")
    src = tmp_path / "src.bin"
    src.write_bytes(b"new-version" * 1000)

    def failing_fsync(fd: int) -> None:
        raise OSError("disk went away")

    monkeypatch.setattr("adas.storage.os.fsync", failing_fsync)
    with pytest.raises(OSError, match="disk went away"):
        store.put_file("models/m.bin", src)
    with pytest.raises(OSError, match="disk went away"):
        store.put_bytes("models/m.bin", b"newer")
    monkeypatch.undo()
    assert store.get_bytes("models/m.bin") == b"old-version"
    assert sorted(p.name for p in (tmp_path / "artifacts" / "models").iterdir()) == ["m.bin", "m.bin.sha256"]


def test_local_concurrent_writers_never_expose_a_torn_file(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    store.put_bytes("asset-values/race.json", payloads[0])
    errors: list[Exception] = []

    def write(i: int) -> None:
        for _ in range(5):
            store.put_bytes("asset-values/race.json", payloads[i])

    def read() -> None:
        for _ in range(40):
            data = (Path(store.root) / "asset-values/race.json").read_bytes()
            if data not in payloads:
                errors.append(AssertionError("torn read"))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_conditional_create_has_exactly_one_winner(store: ArtifactStore) -> None:
    """The version claim's primitive: of many writers of one key, one creates it, the others see
    False and read the winner's bytes (O_EXCL-style link locally, If-None-Match on S3)."""
    results: list[tuple[int, bool]] = []

    def claim(i: int) -> None:
        results.append(
            (i, store.put_bytes_if_absent("candidates/t/1.0.0/CLAIM.json", f"claimer-{i}".encode()))
        )

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, created in results if created]
    assert len(winners) == 1, results
    assert store.get_bytes("candidates/t/1.0.0/CLAIM.json") == f"claimer-{winners[0]}".encode()


def test_delete_and_open(store: ArtifactStore) -> None:
    store.put_bytes("a/b.bin", b"payload")
    with store.open("a/b.bin") as f:
        assert f.read() == b"payload"
    store.delete("a/b.bin")
    assert not store.exists("a/b.bin")
    store.delete("a/b.bin")  # deleting what is gone is not an error


# --- A full disk ---------------------------------------------------------------------------


def _fill_disk_at(monkeypatch: pytest.MonkeyPatch, *, when: str) -> list[int]:
    """Make the store's writes hit a full disk: ``when="data"`` after half of the first chunk of
    the bytes (a short write, then ENOSPC), ``when="record"`` at the write of the hash record."""
    real_write = os.write
    calls: list[int] = []

    def write(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        is_record = re.fullmatch(rb"[0-9a-f]{64}  \S+\n", bytes(data)) is not None
        if when == "record" and is_record:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if when == "data" and not is_record:
            if len(calls) > 1:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, bytes(data[: max(1, len(data) // 2)]))
        return real_write(fd, data)

    monkeypatch.setattr("adas.storage.os.write", write)
    return calls


@pytest.mark.parametrize("when", ["data", "record"])
def test_disk_full_midway_keeps_the_earlier_version_and_leaves_no_litter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    earlier = store.put_bytes("models/det/1.0.0/model.onnx", b"earlier-version" * 100)
    src = tmp_path / "model.onnx"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    attempts = {
        "put_file over an earlier version": lambda: store.put_file("models/det/1.0.0/model.onnx", src),
        "put_bytes over an earlier version": lambda: store.put_bytes(
            "models/det/1.0.0/model.onnx", b"n" * 5000
        ),
        "put_bytes of a new key": lambda: store.put_bytes("models/det/1.0.0/new.bin", b"n" * 5000),
        "conditional create": lambda: store.put_bytes_if_absent("models/det/1.0.0/CLAIM.json", b"{}" * 100),
    }
    for what, attempt in attempts.items():
        calls = _fill_disk_at(monkeypatch, when=when)
        with pytest.raises(ArtifactWriteError) as info:
            attempt()
        monkeypatch.undo()
        assert calls, what  # the write really went through the patched os.write
        err = info.value
        assert err.errno == errno.ENOSPC and isinstance(err, OSError), what
        key = "CLAIM.json" if "conditional" in what else ("new.bin" if "new key" in what else "model.onnx")
        assert f"models/det/1.0.0/{key}" in str(err) and "No space left on device" in str(err), str(err)
        assert "nothing new is stored under this key" in str(err)
    # The earlier version is intact, nothing partial took a final name, no temporary file is left.
    assert store.get_bytes(earlier.key, expected_sha256=earlier.sha256) == b"earlier-version" * 100
    assert not store.exists("models/det/1.0.0/new.bin") and not store.exists("models/det/1.0.0/CLAIM.json")
    assert sorted(os.listdir(tmp_path / "artifacts/models/det/1.0.0")) == ["model.onnx", "model.onnx.sha256"]
    # Once there is space again, the same writes succeed.
    assert store.put_file("models/det/1.0.0/model.onnx", src).sha256 == sha256_bytes(src.read_bytes())
    assert store.put_bytes_if_absent("models/det/1.0.0/CLAIM.json", b"{}")


def test_rewriting_identical_bytes_leaves_the_file_untouched(tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(tmp_path / "artifacts"))
    first = store.put_bytes("packs/m/model.onnx", b"engine")
    path = tmp_path / "artifacts/packs/m/model.onnx"
    inode = path.stat().st_ino
    again = store.put_bytes("packs/m/model.onnx", b"engine")
    assert again == first and path.stat().st_ino == inode  # not replaced: same file
    store.put_bytes("packs/m/model.onnx", b"other engine")
    assert path.stat().st_ino != inode and store.get_bytes("packs/m/model.onnx") == b"other engine"


# --- S3 answering 500s and stalling: retries with backoff, never a partial object ------------


def _store_behind(s3: FaultyS3, tmp_path: Path, **config: Any) -> S3ArtifactStore:
    """A store on a fresh bucket (moto's state is shared by every server in the process),
    talking to S3 through the faulty proxy."""
    bucket = f"faults-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3.s3_url, region_name="us-east-1").create_bucket(Bucket=bucket)
    settings = S3ClientConfig(**{"max_attempts": 3, "connect_timeout_s": 2, "read_timeout_s": 0.5, **config})
    return S3ArtifactStore(
        lambda: s3_client(settings, endpoint_url=s3.proxy_url, region_name="us-east-1"),
        bucket=bucket,
        prefix="gold",
        cache_dir=str(tmp_path / "cache"),
    )


def _objects(s3: FaultyS3, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=s3.s3_url, region_name="us-east-1")
    page = client.list_objects_v2(Bucket=bucket)
    return [o["Key"] for o in page.get("Contents", [])]


@pytest.mark.parametrize("fault", ["500", "stall", "lost-answer"])
def test_s3_put_is_retried_with_backoff_until_it_succeeds(s3_env: str, tmp_path: Path, fault: str) -> None:
    """Two failed attempts (500, no answer before the read timeout, or an answer lost after S3
    stored the object), then the third goes through: the put succeeds, whole."""
    data = os.urandom(256 * 1024)
    with faulty_s3(FaultPlan(fault=fault, faults=2, stall_s=1.0)) as s3:  # type: ignore[arg-type]
        store = _store_behind(s3, tmp_path)
        stored = store.put_bytes("models/det/1.0.0/model.onnx", data)
        assert s3.plan.attempts("PUT", "/gold/models/det/1.0.0/model.onnx") == [fault, fault, "forwarded"]
        assert stored.sha256 == sha256_bytes(data)
        assert store.get_bytes(stored.key, expected_sha256=stored.sha256) == data
        assert _objects(s3, store.bucket) == ["gold/models/det/1.0.0/model.onnx"]


@pytest.mark.parametrize("fault", ["500", "stall"])
def test_s3_put_failing_every_attempt_raises_naming_the_key_and_stores_nothing(
    s3_env: str, tmp_path: Path, fault: str
) -> None:
    with faulty_s3(FaultPlan(fault=fault, faults=None, stall_s=1.0)) as s3:  # type: ignore[arg-type]
        store = _store_behind(s3, tmp_path)
        for put in (
            lambda: store.put_bytes("models/det/1.0.0/model.onnx", b"engine"),
            lambda: store.put_bytes_if_absent("candidates/det/1.0.0/CLAIM.json", b"{}"),
        ):
            with pytest.raises(ArtifactWriteError) as info:
                put()
            msg = str(info.value)
            assert f"s3://{store.bucket}/gold/" in msg and "standard retries, at most 3 attempts" in msg, msg
            assert "nothing new is stored under this key" in msg
        assert s3.plan.attempts("PUT", "/gold/models/det/1.0.0/model.onnx") == [fault] * 3
        assert _objects(s3, store.bucket) == []


def test_s3_client_settings_come_from_one_versioned_file(tmp_path: Path) -> None:
    shipped = load_storage_config().s3
    assert shipped.retry_mode in ("standard", "adaptive") and shipped.max_attempts >= 3
    client = s3_client(
        S3ClientConfig(retry_mode="adaptive", max_attempts=7, connect_timeout_s=3, read_timeout_s=9),
        region_name="us-east-1",
    )
    config = client.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": 7}
    assert (config.connect_timeout, config.read_timeout) == (3, 9)
    bad = tmp_path / "storage.yaml"
    bad.write_text("version: 1\ns3:\n  retry_mode: legacy\n  max_attempts: 0\n")
    with pytest.raises(ConfigError) as info:
        load_storage_config(bad)
    assert "s3.retry_mode" in str(info.value) and "s3.max_attempts" in str(info.value)


def test_the_dagster_s3_store_resource_builds_its_client_from_the_storage_config(
    s3_env: str, tmp_path: Path
) -> None:
    import dagster as dg

    from resources.artifact_store import S3ArtifactStoreResource

    bucket = f"adas-{os.urandom(4).hex()}"
    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").create_bucket(Bucket=bucket)
    resource = S3ArtifactStoreResource(
        s3=S3Resource(endpoint_url=s3_env, region_name="us-east-1"),
        bucket=bucket,
        prefix="gold",
        cache_dir=str(tmp_path / "cache"),
    )
    store = resource.create_resource(dg.build_init_resource_context())
    assert store.get_bytes(store.put_bytes("a/b.json", b"{}").key) == b"{}"
    shipped, config = load_storage_config().s3, store.client.meta.config  # type: ignore[attr-defined]
    assert config.retries == {"mode": shipped.retry_mode, "total_max_attempts": shipped.max_attempts}
    assert (config.connect_timeout, config.read_timeout) == (
        shipped.connect_timeout_s,
        shipped.read_timeout_s,
    )
