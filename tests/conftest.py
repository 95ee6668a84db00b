"""Shared fixtures: results-database URLs for SQLite (always) and PostgreSQL (when configured).

PostgreSQL tests use ``CMCL_TEST_POSTGRES_URL`` (CI sets it to the local server). When it is
unset they skip with the reason; when it is set but the server cannot be reached they fail,
so a broken CI database never passes silently. Each test gets its own fresh database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

PG_ENV = "CMCL_TEST_POSTGRES_URL"


def _pg_admin_url() -> str | None:
    url = os.environ.get(PG_ENV, "").strip()
    if not url:
        return None
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The server URL from CMCL_TEST_POSTGRES_URL; skip when unset, fail when unreachable."""
    url = _pg_admin_url()
    if url is None:
        pytest.skip(
            f"PostgreSQL tests need {PG_ENV} (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    sa = pytest.importorskip("sqlalchemy")
    try:
        eng = sa.create_engine(url)
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        eng.dispose()
    except Exception as err:  # noqa: BLE001 - report any connection failure as a test failure
        pytest.fail(f"{PG_ENV} is set but PostgreSQL is unreachable: {type(err).__name__}: {err}")
    return url


def admin_execute(admin_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE/DROP DATABASE or SCHEMA)."""
    import sqlalchemy as sa

    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    name = f"cmcl_test_{uuid.uuid4().hex[:12]}"
    admin_execute(pg_admin_url, f'CREATE DATABASE "{name}"')
    yield sa.make_url(pg_admin_url).set(database=name).render_as_string(hide_password=False)
    admin_execute(pg_admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'results.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def results_url(request) -> str:
    """A fresh results-database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
