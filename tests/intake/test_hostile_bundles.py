"""A corpus of malicious and malformed bundles: each refused, naming the path or field, quickly,
with nothing stored and no code of the bundle run outside the sandbox; a good bundle beside
them is still taken in."""

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from adas.intake.bundle import prewarm_model_inspection
from adas.intake.candidates import screen_bundle, store_bundle
from adas.intake.files import BundleRejected
from adas.registry.store import RegistryStore
from adas.storage import LocalArtifactStore
from tests.intake.hostile import PAYLOAD_MARK, corpus

CORPUS = corpus()
REPO = Path(__file__).resolve().parents[2]


def test_the_corpus_covers_every_class_of_attack() -> None:
    assert len(CORPUS) >= 40
    assert len({name for name, *_ in CORPUS}) == len(CORPUS)


def _tree(root: Path) -> list[tuple[str, bytes]]:
    return sorted((str(p.relative_to(root)), p.read_bytes()) for p in root.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def seeded_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryStore]:
    """The registry database (SQLite) intake claims versions in, alone in its folder."""
    registry = RegistryStore(f"sqlite:///{tmp_path_factory.mktemp('registry') / 'registry.db'}")
    yield registry
    registry.dispose()


@pytest.fixture(scope="module")
def seeded_store(
    tmp_path_factory: pytest.TempPathFactory, bundle_template: Path, seeded_registry: RegistryStore
) -> LocalArtifactStore:
    """A store (and registry) that already hold version 0.1.0 of the template bundle."""
    root = tmp_path_factory.mktemp("store")
    store = LocalArtifactStore(root / "artifacts")
    screened = screen_bundle(store, bundle_template, root / "work", seeded_registry)
    store_bundle(store, screened.bundle, source="seed", claims=seeded_registry)
    assert seeded_registry.version_claim("vehicle-detection-2d", "0.1.0") is not None
    return store


def _registry_folder(registry: RegistryStore) -> Path:
    return Path(str(registry.engine.url.database)).parent


@pytest.mark.parametrize(("name", "build", "field", "reason"), CORPUS, ids=[c[0] for c in CORPUS])
def test_a_hostile_bundle_is_refused_naming_where(
    name: str,
    build,
    field: str,
    reason: str,
    bundle_template: Path,
    tmp_path: Path,
    seeded_store: LocalArtifactStore,
    seeded_registry: RegistryStore,
) -> None:  # type: ignore[no-untyped-def]
    bundle, outside = tmp_path / "inbox" / name, tmp_path / "outside"
    outside.mkdir()
    shutil.copytree(bundle_template, bundle, copy_function=shutil.copy)
    # A newer version than the stored one, so only the attack can make it fail.
    (bundle / "contract.yaml").write_text(
        (bundle / "contract.yaml").read_text().replace("version: 0.1.0", "version: 0.2.0")
    )
    build(bundle, outside)
    before, registry_before = _tree(Path(seeded_store.root)), _tree(_registry_folder(seeded_registry))
    # As an intake run does when it starts: the sandbox that judges a model is started ahead.
    prewarm_model_inspection(wait=120)
    start = time.perf_counter()
    with pytest.raises(BundleRejected) as info:
        screen_bundle(seeded_store, bundle, tmp_path / "work", seeded_registry)
    elapsed = time.perf_counter() - start
    print(f"{name}: refused in {elapsed:.3f} s ({info.value.field}: {info.value.reason[:120]})")
    assert field in info.value.field, f"{info.value.field!r}: {info.value.reason}"
    assert reason in info.value.reason, f"{info.value.field!r}: {info.value.reason}"
    assert elapsed < 2.0, f"refused after {elapsed:.2f} s"
    assert _tree(Path(seeded_store.root)) == before, "a refused bundle changed the store"
    assert _tree(_registry_folder(seeded_registry)) == registry_before, (
        "a refused bundle changed the registry"
    )
    assert not (outside / PAYLOAD_MARK).exists() and not Path("/tmp/pwned-exec").exists()


def test_build_metadata_does_not_make_a_new_version(
    bundle_template: Path, tmp_path: Path, seeded_store: LocalArtifactStore
) -> None:
    bundle = tmp_path / "rebuild"
    shutil.copytree(bundle_template, bundle, copy_function=shutil.copy)
    contract = yaml.safe_load((bundle / "contract.yaml").read_text())
    contract["version"] = "0.1.0+rebuild"
    contract["model_name"] = "other-weights"  # different bytes under the same version
    (bundle / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    with pytest.raises(BundleRejected, match=r"0\.1\.0 is already taken by bundle"):
        store_bundle(seeded_store, screen_bundle(seeded_store, bundle, tmp_path / "work").bundle, "test")


def test_a_good_bundle_is_still_taken_in_after_the_corpus(
    bundle_template: Path, tmp_path: Path, seeded_store: LocalArtifactStore, seeded_registry: RegistryStore
) -> None:
    bundle = tmp_path / "good"
    shutil.copytree(bundle_template, bundle, copy_function=shutil.copy)
    (bundle / "contract.yaml").write_text(
        (bundle / "contract.yaml").read_text().replace("version: 0.1.0", "version: 0.3.0")
    )
    screened = screen_bundle(seeded_store, bundle, tmp_path / "work", seeded_registry)
    ref = store_bundle(seeded_store, screened.bundle, "test", seeded_registry)
    assert ref.contract.version == "0.3.0"
    claim = seeded_registry.version_claim("vehicle-detection-2d", "0.3.0")
    assert claim is not None and claim.bundle_sha256 == screened.bundle.digest.sha256
    for f in ref.files.values():
        assert seeded_store.recorded_sha256(f.key) == f.sha256
    # The same bytes again: idempotent, and known as already stored.
    again = screen_bundle(seeded_store, bundle, tmp_path / "work2")
    assert again.already_stored


@pytest.mark.slow
def test_eight_processes_claiming_one_version_at_once_one_wins(bundle_template: Path, tmp_path: Path) -> None:
    for i in range(8):
        src = tmp_path / f"src-{i}"
        shutil.copytree(bundle_template, src, copy_function=shutil.copy)
        text = (src / "contract.yaml").read_text().replace("version: 0.1.0", "version: 0.9.0")
        (src / "contract.yaml").write_text(
            text.replace("model_name: test-detector", f"model_name: claimer-{i}")
        )
    # Eight separate interpreters, started together: each validates its own bundle, then claims.
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.intake.claim_worker", str(tmp_path), str(i)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outcomes = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        outcomes.append(out.strip().splitlines()[-1])
    assert outcomes.count("won") == 1, outcomes
    assert all("0.9.0 is already taken by bundle" in o for o in outcomes if o != "won"), outcomes
    # The claim was decided in the registry database (each worker claims there first): it names
    # the winner, and every loser was told so.
    winner = f"claimer-{outcomes.index('won')}"
    registry = RegistryStore(f"sqlite:///{tmp_path / 'registry.db'}")
    claim = registry.version_claim("vehicle-detection-2d", "0.9.0")
    assert claim is not None and claim.claimer == winner, claim
    assert all(f"claimed by {winner} at" in o for o in outcomes if o != "won"), outcomes
