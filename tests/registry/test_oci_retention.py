"""OCI retention (#14 item 6): the pruner deletes, by digest, pack manifests no registry entry
pins and no ``oci_published`` event names (with their ``.sig``/``.sbom`` attachment tags), keeps
the newest versions, never touches a pinned one; the dry run lists digest, tag and size; the
local registry's garbage collection then frees the unreferenced blobs only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adas.packaging.local_oci_registry import (
    LocalOciRegistry,
    ensure_local_registry,
    garbage_collect,
    registry_available,
    stop_local_registry,
)
from adas.packaging.oci_attachments import attachment_tag
from adas.packaging.oci_client import RegistryClient
from adas.packaging.oci_deploy import pull_verified
from adas.packaging.refs import PublishedPackRef
from adas.packaging.trust import TRUST_FILE, load_trust_file
from adas.registry.cli import main
from adas.registry.config import RetentionPolicy
from adas.registry.retention import prune_oci_manifests
from tests.packaging.oci_packs import make_pack
from tests.registry.packs import publish_signed
from tests.registry.world import World, make_world

pytestmark = pytest.mark.skipif(
    not registry_available(), reason="docker-registry not installed (bash scripts/setup_system_deps.sh)"
)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[LocalOciRegistry]:
    """The local registry as a daemon (pid file): what ``gc`` stops and starts again."""
    root = tmp_path / "oci-registry"
    reg = ensure_local_registry(root, LocalOciRegistry(root).port)
    yield reg
    stop_local_registry(root)


def _publish(w: World, version: str, seed: int, client: RegistryClient) -> PublishedPackRef:
    return publish_signed(
        w.store, make_pack(w.store, w.workdir / "extra", w.key_dir, version, seed), client, w.key_dir
    )


def _blobs(ref: PublishedPackRef) -> set[str]:
    return {ref.config_digest, *(x.digest for x in ref.layers)}


def test_prune_deletes_only_unpinned_old_manifests_then_gc_frees_their_blobs(
    tmp_path: Path,
    daemon: LocalOciRegistry,
    onnx_models: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    w = make_world(url, tmp_path, onnx_models, oci=daemon)  # 1.3.0: its entry pins the reference
    client = RegistryClient(daemon.url)
    old_pinned = _publish(w, "1.0.0", 10, client)
    unpinned = _publish(w, "1.1.0", 11, client)
    newest = _publish(w, "1.4.0", 14, client)  # newest: kept though unpinned (may be registering now)
    # An oci_published event pins 1.0.0, recorded at another address: digests are what count.
    w.registry.record_event(
        "oci_published",
        actor="ci",
        reason="published after registration",
        idempotency_key="oci:test",
        payload={"oci_reference": f"10.0.0.1:5000/{old_pinned.repository}@{old_pinned.digest}"},
    )
    pinned_ref = w.candidate.body.pointers.oci_reference
    assert pinned_ref
    repo = unpinned.repository
    tags_before = set(client.tags(repo))
    assert {attachment_tag(unpinned.digest, "sig"), attachment_tag(unpinned.digest, "sbom")} <= tags_before
    policy = RetentionPolicy(keep_versions=1)

    dry = prune_oci_manifests(client, w.registry, policy, dry_run=True)
    assert [(r.digest, r.tags, r.version) for r in dry.deleted] == [
        (unpinned.digest, (unpinned.tag,), "1.1.0")
    ]
    assert dry.deleted[0].size > sum(x.size for x in unpinned.layers)  # layers + config + manifest
    assert {r.digest for r in dry.protected} == {old_pinned.digest, pinned_ref.rpartition("@")[2]}
    assert [r.digest for r in dry.kept] == [newest.digest]
    assert set(client.tags(repo)) == tags_before  # a dry run deletes nothing

    # The CLI's dry run lists digest, tag and size for a person.
    monkeypatch.setenv("ADAS_OCI_REGISTRY", daemon.url)
    assert main(["--url", url, "prune", "--dry-run", "--scope", "oci"]) == 0
    out = capsys.readouterr().out
    assert f"would delete {repo}@{unpinned.digest}  {unpinned.tag}  {dry.deleted[0].size} bytes" in out

    report = prune_oci_manifests(client, w.registry, policy)
    assert [r.digest for r in report.deleted] == [unpinned.digest]
    assert client.manifest_digest(repo, unpinned.digest) is None
    gone = {unpinned.tag} | {attachment_tag(unpinned.digest, s) for s in ("sig", "att", "sbom")}
    assert set(client.tags(repo)) == tags_before - gone
    for kept in (old_pinned.digest, newest.digest, pinned_ref.rpartition("@")[2]):
        assert client.manifest_digest(repo, kept) == kept
        assert attachment_tag(kept, "sig") in client.tags(repo)
    assert prune_oci_manifests(client, w.registry, policy).deleted == []  # idempotent

    # Blob GC: the registry is stopped for the sweep and serves again afterwards; only blobs no
    # remaining manifest lists go.
    only_unpinned = _blobs(unpinned) - _blobs(old_pinned) - _blobs(newest)
    still_listed = _blobs(old_pinned) | _blobs(newest)
    would, _ = garbage_collect(daemon.root, dry_run=True)
    assert only_unpinned <= set(would) and not still_listed & set(would)
    assert all(daemon.blob_path(d).exists() for d in only_unpinned)
    deleted, _ = garbage_collect(daemon.root)
    assert only_unpinned <= set(deleted)
    assert not any(daemon.blob_path(d).exists() for d in only_unpinned)
    assert all(daemon.blob_path(d).exists() for d in still_listed)
    trust = load_trust_file(w.key_dir / TRUST_FILE)
    pulled = pull_verified(RegistryClient(daemon.url), pinned_ref, trust, tmp_path / "pulled")
    assert pulled.key_id
