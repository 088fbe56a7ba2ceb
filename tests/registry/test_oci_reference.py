"""The registry entry pins the pack's OCI reference (``repository@sha256:...``) per cell; entries
registered before packs were published still read and verify, and the same pack published since
is recorded beside them as an event, never rewritten into them."""

from __future__ import annotations

from pathlib import Path

import pytest

from adas.catalog import load_catalog
from adas.packaging.refs import PackRef, PublishedPackRef
from adas.registry.entries import entry_from_pack
from adas.registry.models import RegistryError, canonical_json
from adas.registry.registration import register_entry
from adas.registry.store import ImmutableEntryError
from tests.registry.packs import build_pack
from tests.registry.world import make_world

DIGEST = "sha256:" + "ab" * 32


def published(pack: PackRef, digest: str = DIGEST, manifest_sha256: str | None = None) -> PublishedPackRef:
    """What ``published_pack`` hands downstream for ``pack`` (no registry needed to register it)."""
    repository = "detection/test-detector"
    return PublishedPackRef(
        reference=f"127.0.0.1:5123/{repository}@{digest}",
        registry="127.0.0.1:5123",
        repository=repository,
        tag=f"{pack.engine.contract.version}-x86-cpu-fp32-abcdef0",
        digest=digest,
        device=pack.engine.device,
        precision=pack.engine.precision,
        pack_prefix=pack.prefix,
        pack_manifest_sha256=manifest_sha256 or pack.manifest.sha256,
        config_digest="sha256:" + "cd" * 32,
        layers=[],
        blobs_pushed=0,
        blobs_skipped=0,
        bytes_pushed=0,
        bytes_skipped=0,
    )


def test_entries_pin_the_oci_reference_and_older_entries_stay_as_registered(
    registry_url: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    w = make_world(registry_url, tmp_path, onnx_models, publish=False)
    catalog = load_catalog()
    # Registered without a publication (as every entry before this field existed): it serializes
    # without the new keys, so its digest is what it was.
    old = w.registry.find_entry(w.candidate.body.model_name, "1.3.0", w.candidate.target)
    assert not {"oci_reference", "oci_tag"} & set(old.body.pointers.model_dump(mode="json"))
    assert "oci_reference" not in canonical_json(old.body.model_dump(mode="json"))
    assert old.body.digest() == old.digest and old.body.pointers.oci_reference is None

    # The same pack, published since: the entry is not rewritten, the publication is an event.
    b = w.built
    body = entry_from_pack(w.store, b.pack, b.gate, b.sim, b.report, catalog, published=published(b.pack))
    for _ in range(2):  # idempotent
        entry, created = register_entry(w.registry, body, actor="ci")
        assert (entry.id, entry.digest, created) == (old.id, old.digest, False)
    (event,) = w.registry.events(entry_id=old.id, kinds=["oci_published"])
    assert event.payload["oci_reference"] == f"127.0.0.1:5123/detection/test-detector@{DIGEST}"

    # A new version registered with its publication pins the reference in its body.
    new = build_pack(w.store, tmp_path / "build", w.key_dir, "1.4.0", onnx_models["agree"])
    ref = published(new.pack)
    body = entry_from_pack(w.store, new.pack, new.gate, new.sim, new.report, catalog, published=ref)
    entry, created = register_entry(w.registry, body, actor="ci")
    stored = w.registry.find_entry(entry.body.model_name, "1.4.0", entry.target)
    assert created and stored.body.pointers.oci_reference == ref.reference
    assert stored.body.pointers.oci_tag == f"127.0.0.1:5123/detection/test-detector:{ref.tag}"
    assert stored.body.digest() == stored.digest
    assert f"| OCI artifact | `{ref.reference}` |" in stored.model_card
    # Re-registered with the registry at another address: the same digest is the same entry;
    # another digest for the same version is refused (entries are immutable).
    moved = ref.model_copy(update={"reference": ref.reference.replace(":5123", ":5124")})
    body = entry_from_pack(w.store, new.pack, new.gate, new.sim, new.report, catalog, published=moved)
    assert register_entry(w.registry, body, actor="ci")[0].id == stored.id
    other = published(new.pack, digest="sha256:" + "ef" * 32)
    body = entry_from_pack(w.store, new.pack, new.gate, new.sim, new.report, catalog, published=other)
    with pytest.raises(ImmutableEntryError):
        register_entry(w.registry, body, actor="ci")


def test_a_publication_of_another_pack_is_refused(
    registry_url: str, tmp_path: Path, onnx_models: dict[str, Path]
) -> None:
    w = make_world(registry_url, tmp_path, onnx_models, publish=False)
    b = w.built
    other = published(b.pack, manifest_sha256="0" * 64)
    with pytest.raises(RegistryError, match=f"manifest has sha256 {'0' * 64}.*{b.pack.manifest.sha256}"):
        entry_from_pack(w.store, b.pack, b.gate, b.sim, b.report, load_catalog(), published=other)
