"""Version claims in the registry database (SQLite and PostgreSQL): one atomic insert per
``task``/``version``; of eight processes claiming at once exactly one wins, the others are
told who holds it; the same bytes again are idempotent; the database refuses edits."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from adas.intake.claims import VersionTaken
from adas.registry.models import RegistryError
from adas.registry.store import RegistryStore, VersionClaimConflict

REPO = Path(__file__).resolve().parents[2]
TASK = "vehicle-detection-2d"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def test_claim_is_idempotent_for_the_same_bytes_and_refused_for_others(registry_url: str) -> None:
    registry = RegistryStore(registry_url)
    assert registry.version_claim(TASK, "1.3.0") is None
    first = registry.claim_version(TASK, "1.3.0", _sha("a"), "inbox/a")
    assert (first.task, first.version, first.bundle_sha256, first.claimer) == (
        TASK,
        "1.3.0",
        _sha("a"),
        "inbox/a",
    )
    # The same bytes retried (another run, another claimer name): the first claim, unchanged.
    assert registry.claim_version(TASK, "1.3.0", _sha("a"), "inbox/a-retry") == first
    assert registry.version_claim(TASK, "1.3.0") == first
    # Other bytes under the same version, with or without build metadata: refused, naming the holder.
    for version in ("1.3.0", "1.3.0+rebuild"):
        with pytest.raises(VersionClaimConflict) as info:
            registry.claim_version(TASK, version, _sha("b"), "inbox/b")
        msg = str(info.value)
        assert f"{TASK} 1.3.0 is already claimed by bundle {_sha('a')}" in msg
        assert "inbox/a" in msg and _sha("b") in msg and "bump the version" in msg
        assert info.value.holder == first
        # Intake catches the protocol's exception; the registry's is one.
        assert isinstance(info.value, VersionTaken) and isinstance(info.value, RegistryError)
    # Another version, or the same version of another task, is free.
    assert registry.claim_version(TASK, "1.3.1", _sha("b"), "inbox/b").bundle_sha256 == _sha("b")
    assert registry.claim_version("lane-detection", "1.3.0", _sha("b"), "inbox/b").task == "lane-detection"


def test_claims_are_validated_and_append_only_in_the_database(registry_url: str) -> None:
    registry = RegistryStore(registry_url)
    with pytest.raises(RegistryError, match=r"bundle_sha256 must be 64 lowercase hex digits"):
        registry.claim_version(TASK, "1.0.0", "abc", "inbox/x")
    with pytest.raises(RegistryError, match=r"claimer must be 1-300 characters"):
        registry.claim_version(TASK, "1.0.0", _sha("x"), " ")
    registry.claim_version(TASK, "1.0.0", _sha("x"), "inbox/x")
    for sql in (
        "UPDATE registry_version_claims SET bundle_sha256 = 'f'",
        "DELETE FROM registry_version_claims",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), registry.engine.begin() as conn:
            conn.execute(sa.text(sql))
    assert registry.version_claim(TASK, "1.0.0").bundle_sha256 == _sha("x")  # type: ignore[union-attr]


def _claimers(url: str, sync: Path, claimers: dict[str, str]) -> list[dict]:
    """Start one interpreter per claimer, wait until every one has opened the registry, then let
    them all insert at the same moment; their JSON outcomes."""
    sync.mkdir(exist_ok=True)
    (sync / "go").unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.registry.claim_worker", url, str(sync), name, sha],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, sha in claimers.items()
    ]
    try:
        deadline = time.monotonic() + 120
        while not all((sync / f"ready-{name}").exists() for name in claimers):
            assert all(p.poll() is None for p in procs), [p.communicate()[1][-2000:] for p in procs]
            assert time.monotonic() < deadline, "the claimers did not start"
            time.sleep(0.02)
        (sync / "go").touch()
        outcomes = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err[-2000:]
            outcomes.append(json.loads(out.strip().splitlines()[-1]))
        return outcomes
    finally:
        for p in procs:
            p.kill()
        for name in claimers:
            (sync / f"ready-{name}").unlink(missing_ok=True)


@pytest.mark.slow
def test_eight_processes_claim_one_version_at_once_exactly_one_wins(
    registry_url: str, tmp_path: Path
) -> None:
    RegistryStore(registry_url).dispose()  # the schema exists before the race, as in production
    bundles = {f"claimer-{i}": _sha(f"bundle-{i}") for i in range(8)}
    outcomes = _claimers(registry_url, tmp_path / "sync", bundles)
    winners = [o["claim"] for o in outcomes if o["won"]]
    assert len(winners) == 1, outcomes
    won = winners[0]
    assert bundles[won["claimer"]] == won["bundle_sha256"]
    for lost in (o for o in outcomes if not o["won"]):
        assert lost["holder"] == won
        assert f"already claimed by bundle {won['bundle_sha256']} ({won['claimer']}" in lost["error"]
    assert RegistryStore(registry_url).version_claim(TASK, "2.0.0").bundle_sha256 == won["bundle_sha256"]  # type: ignore[union-attr]

    # Retries in new processes: the winner's bytes get the same claim back (idempotent), a
    # loser's bytes are refused again, naming the same holder.
    loser = next(name for name in bundles if name != won["claimer"])
    winner_retry, loser_retry = _claimers(  # outcomes come back in the order of the claimers
        registry_url,
        tmp_path / "sync",
        {f"{won['claimer']}-retry": won["bundle_sha256"], f"{loser}-retry": bundles[loser]},
    )
    assert winner_retry == {"won": True, "claim": won}
    assert loser_retry["won"] is False and loser_retry["holder"] == won
