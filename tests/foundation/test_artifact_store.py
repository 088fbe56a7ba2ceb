import os
import threading
from pathlib import Path

import boto3
import pytest
from dagster_aws.s3 import S3Resource

from adas.storage import (
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactStore,
    LocalArtifactStore,
    S3ArtifactStore,
    sha256_bytes,
)


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
