"""Registry fixtures: every store test runs on SQLite AND on the PostgreSQL at 127.0.0.1:5432."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

PG_ADMIN_URL = os.environ.get("ADAS_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> bool:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
        return True
    except Exception:
        return False


PG_AVAILABLE = _pg_available()


def create_pg_database() -> str:
    name = f"registry_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param(
            "postgresql",
            marks=pytest.mark.skipif(not PG_AVAILABLE, reason=f"no PostgreSQL at {PG_ADMIN_URL}"),
        ),
    ]
)
def registry_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def onnx_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two untrained detectors exported once per session: ``agree`` (the production weights)
    and ``disagree`` (other weights: different detections on the same frames)."""
    from tests.registry.packs import export_untrained

    root = tmp_path_factory.mktemp("onnx")
    return {
        "agree": export_untrained(root / "seed0.onnx", seed=0),
        "disagree": export_untrained(root / "seed1.onnx", seed=1),
    }


@pytest.fixture
def artifact_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    from adas.storage import LocalArtifactStore

    return LocalArtifactStore(root=str(tmp_path / "artifacts"))


@pytest.fixture
def production_registry_url(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL when available (the production shape), else SQLite: for the slow end-to-end
    tests that run once; the fast tests run on both."""
    if not PG_AVAILABLE:
        yield f"sqlite:///{tmp_path / 'registry.db'}"
        return
    url = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(url)
