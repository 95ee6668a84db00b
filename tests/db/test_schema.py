"""Migrations, model/migration agreement, engine setup and error messages (SQLite + PostgreSQL)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from db.engine import (
    VERSION_TABLE,
    apply_migrations,
    current_revision,
    head_revision,
    open_results,
    upgrade,
)
from db.errors import ResultsDatabaseError
from db.models import Base

TABLES = {
    "cmcl_runs",
    "cmcl_edges",
    "cmcl_latents",
    "cmcl_images",
    "cmcl_quarantine",
    "cmcl_run_variables",
    "cmcl_artifacts",
}


def test_migrations_apply_from_empty_and_are_idempotent(results_url):
    eng = open_results(results_url)
    try:
        names = set(sa.inspect(eng).get_table_names())
        assert TABLES | {VERSION_TABLE} <= names
        assert current_revision(eng) == head_revision()
    finally:
        eng.dispose()
    # a second open runs no DDL at all
    eng = open_results(results_url, migrate=False)
    statements: list[str] = []
    sa.event.listen(eng, "before_cursor_execute", lambda c, cur, stmt, *a: statements.append(stmt))
    assert apply_migrations(eng) == head_revision()
    ddl = [s for s in statements if s.lstrip().upper().startswith(("CREATE", "ALTER", "DROP"))]
    assert ddl == []
    assert statements, "the listener saw no statement at all"
    eng.dispose()
    assert upgrade(results_url) == head_revision()


def test_models_and_migrations_agree(results_url):
    eng = open_results(results_url)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
            )
            diff = compare_metadata(ctx, Base.metadata)
    finally:
        eng.dispose()
    assert diff == [], f"models and migrations differ; write a migration: {diff}"
    # the comparison is not vacuous: a column the migrations lack is reported
    changed = sa.MetaData()
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["cmcl_runs"].append_column(sa.Column("extra", sa.Integer()))
    eng = open_results(results_url, migrate=False)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
            diff = compare_metadata(ctx, changed)
    finally:
        eng.dispose()
    assert [d[0] for d in diff] == ["add_column"]


def test_downgrade_to_base_and_back(results_url):
    from alembic import command

    from db.engine import _alembic_config

    eng = open_results(results_url)
    try:
        with eng.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "base")
        assert not TABLES & set(sa.inspect(eng).get_table_names())
        assert current_revision(eng) is None
        assert apply_migrations(eng) == head_revision()
        assert TABLES <= set(sa.inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_edge_trust_migration_keeps_existing_rows(results_url):
    """0001 -> 0002 adds orientation / stability / direction_agreement; old rows stay intact
    with NULLs there, and the new columns only take their documented values."""
    from alembic import command

    from db.engine import _alembic_config

    eng = sa.create_engine(results_url)
    try:
        with eng.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.execute(
                sa.text(
                    "INSERT INTO cmcl_runs (id, status, started_at, config, metrics, code_version) "
                    "VALUES (7, 'succeeded', :t, '{}', '{}', '0.1.0')"
                ),
                {"t": "2026-11-01T00:00:00+00:00"},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO cmcl_edges VALUES "
                    "(7, 'covid', 'z1', 0.9, 'clinical', 'latent', 'causal')"
                )
            )
        assert apply_migrations(eng) == head_revision()
        with eng.connect() as conn:
            row = (
                conn.execute(sa.text("SELECT * FROM cmcl_edges WHERE run_id = 7")).mappings().one()
            )
        assert (row["source"], row["target"], row["weight"], row["direction"]) == (
            "covid", "z1", 0.9, "causal",
        )  # fmt: skip
        assert row["orientation"] is None and row["stability"] is None
        assert row["direction_agreement"] is None
        new = "INSERT INTO cmcl_edges VALUES (7, 'age', 'z2', 0.5, 'clinical', 'latent', 'causal', "
        with eng.begin() as conn:
            conn.execute(sa.text(new + "'data', 0.9, 1.0)"))
        for bad in ("'claimed', 0.9, 1.0)", "'data', 1.5, 1.0)", "'data', 0.5, -0.1)"):
            with pytest.raises(sa.exc.IntegrityError), eng.begin() as conn:
                conn.execute(sa.text(new.replace("'age'", "'sex'") + bad))
    finally:
        eng.dispose()


def test_sqlite_pragmas_and_savepoint(sqlite_url, tmp_path):
    nested = tmp_path / "a" / "b" / "results.db"
    eng = open_results(f"sqlite:///{nested}")
    try:
        assert nested.exists()
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar().lower() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        # SAVEPOINT rollback inside a transaction works (pysqlite BEGIN fix)
        runs = Base.metadata.tables["cmcl_runs"]
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            sp = conn.begin_nested()
            conn.execute(sa.text("INSERT INTO t VALUES (2)"))
            sp.rollback()
        with eng.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM t")).scalars().all() == [1]
            assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 0
        # transactional DDL: a rolled-back CREATE TABLE leaves nothing behind
        with eng.connect() as conn:
            tx = conn.begin()
            conn.execute(sa.text("CREATE TABLE gone (x INTEGER)"))
            tx.rollback()
        assert "gone" not in sa.inspect(eng).get_table_names()
    finally:
        eng.dispose()


def test_unreachable_postgres_fails_fast_without_password():
    t0 = time.monotonic()
    with pytest.raises(ResultsDatabaseError) as info:
        open_results("postgresql://cmcl:s3cretPassw0rd@127.0.0.1:1/results")
    assert time.monotonic() - t0 < 15
    msg = str(info.value)
    assert "s3cretPassw0rd" not in msg and "s3cretPassw0rd" not in repr(info.value)
    assert "127.0.0.1" in msg and "fix:" in msg
    assert info.value.__suppress_context__  # the driver's traceback is not printed


def test_bad_url_and_missing_driver_are_clear():
    with pytest.raises(ResultsDatabaseError, match="not a database URL"):
        open_results("not a url")
    with pytest.raises(ResultsDatabaseError, match="no driver"):
        open_results("mysql+nosuchdriver://u:pw@host/db")


def test_read_only_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "ro" / "results.db"
    open_results(f"sqlite:///{path}").dispose()
    path.chmod(0o444)
    try:
        import os

        if os.access(path, os.W_OK):  # running as root: permissions are not enforced
            pytest.skip("file permissions are not enforced for this user")
        with pytest.raises(ResultsDatabaseError, match="read-only"):
            open_results(f"sqlite:///{path}")
    finally:
        path.chmod(0o644)


def test_unwritable_sqlite_file_is_refused_before_opening(tmp_path, monkeypatch):
    """The read-only check itself (the test above skips when run as root)."""
    import db.engine as engine_mod

    monkeypatch.setattr(engine_mod.os, "access", lambda path, mode: False)
    with pytest.raises(ResultsDatabaseError, match="read-only"):
        open_results(f"sqlite:///{tmp_path / 'results.db'}")


def test_uncreatable_sqlite_folder_is_clear(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    with pytest.raises(ResultsDatabaseError, match="cannot create the folder"):
        open_results(f"sqlite:///{blocker / 'sub' / 'results.db'}")


def test_concurrent_first_open_migrates_once(results_url):
    """Two workers opening a fresh database at once both succeed (migration lock)."""
    from concurrent.futures import ThreadPoolExecutor

    def open_and_close(_: int) -> str | None:
        eng = open_results(results_url)
        try:
            return current_revision(eng)
        finally:
            eng.dispose()

    with ThreadPoolExecutor(max_workers=2) as pool:
        revs = list(pool.map(open_and_close, range(2)))
    assert revs == [head_revision(), head_revision()]
