"""Open (and migrate) the results database on SQLite or PostgreSQL.

``open_results`` is the one way the pipeline gets an engine: it normalises the URL
(``postgresql://`` -> psycopg 3), hides bound parameters from error messages, sets SQLite up
for a batch pipeline (foreign keys, WAL, busy timeout, real BEGIN so SAVEPOINTs and
transactional DDL work), checks the database is reachable and writable, and applies the
Alembic migrations shipped in ``db/migrations`` under a lock (PostgreSQL advisory lock,
SQLite ``BEGIN IMMEDIATE``), so two processes opening a fresh database do not race.
Every failure becomes a :class:`db.errors.ResultsDatabaseError` naming the database (password
hidden), what failed and the fix.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event, exc

from db.errors import ResultsDatabaseError, ResultsIntegrityError, is_transient
from db.urls import safe_url, scrub

log = logging.getLogger(__name__)

#: prefixed: the results database may be shared with other applications' Alembic tables
VERSION_TABLE = "cmcl_alembic_version"
SQLITE_BUSY_TIMEOUT_S = 30.0
SQLITE_CACHE_MIB = 64  # page cache per connection: a 100k-latent run fits in cache
PG_CONNECT_TIMEOUT_S = 10
#: alembic's ``context`` is a process-global proxy: one migration at a time per process
_ALEMBIC_LOCK = threading.Lock()
_PG_MIGRATION_LOCK = 0x434D434C  # "CMCL": pg_advisory_xact_lock key serialising migrations
_SQLITE_BEGIN = {"DEFERRED", "IMMEDIATE", "EXCLUSIVE"}
#: execution option read by the SQLite BEGIN hook; write helpers use IMMEDIATE
SQLITE_BEGIN_OPTION = "cmcl_sqlite_begin"


def _json_ready(obj: Any) -> Any:
    """Make numpy scalars/arrays, paths and non-finite floats JSON-safe (NaN/inf -> null)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy array or scalar, without importing numpy
        return _json_ready(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_dumps(obj: Any) -> str:
    """The JSON serializer of the engine: strict JSON that both backends accept.

    Plain data takes json's C fast path (latent vectors: 100k rows per run); only values it
    refuses (numpy types, NaN/inf, paths) go through ``_json_ready`` first.
    """
    try:
        return json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(_json_ready(obj), allow_nan=False, default=str)


def _normalise(url: str) -> sa.URL:
    try:
        u = sa.make_url(url)
    except exc.ArgumentError:
        raise ResultsDatabaseError(
            "results.url is not a database URL",
            "use e.g. sqlite:///cmcl.db or postgresql://user@host/dbname",
        ) from None
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")  # 2.0 defaulted to psycopg2
    return u


def _sqlite_path(u: sa.URL) -> Path | None:
    db = u.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def _prepare_sqlite_file(u: sa.URL, shown: str) -> None:
    path = _sqlite_path(u)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ResultsDatabaseError(
            f"cannot create the folder of the results database {shown}: {err.strerror}",
            "point results.url at a writable location",
        ) from None
    if (path.exists() and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
        raise ResultsDatabaseError(
            f"the results database {shown} is read-only (SQLite needs write access to the "
            "file and to its folder for the WAL journal)",
            "make the file and its folder writable, or point results.url elsewhere",
        )


def _enable_wal(cur: Any) -> None:
    """Switch a SQLite file to WAL once; retry while another connection holds the lock.

    Changing the journal mode needs an exclusive lock and SQLite does not apply the busy
    timeout to it, so two processes opening a fresh file at once could fail with "database
    is locked". The mode is persistent: later connections find WAL already set and skip this.
    """
    cur.execute("PRAGMA journal_mode")
    if str(cur.fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _install_sqlite_hooks(engine: sa.Engine, cache_mib: int) -> None:
    """Pragmas, and SQLAlchemy's documented fix for pysqlite's deferred BEGIN."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # stop pysqlite emitting BEGIN itself
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cur)  # readers do not block the writer
        cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; durable across app crashes
        cur.execute(f"PRAGMA cache_size=-{int(cache_mib) * 1024}")  # in KiB; per connection
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        mode = str(conn.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")).upper()
        conn.exec_driver_sql(f"BEGIN {mode if mode in _SQLITE_BEGIN else 'DEFERRED'}")


def _first_line(err: BaseException) -> str:
    orig = getattr(err, "orig", None) or err
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def create_results_engine(
    url: str, *, echo: bool = False, cache_mib: int = SQLITE_CACHE_MIB
) -> sa.Engine:
    """Create the engine only (no connection, no migration); see :func:`open_results`."""
    u = _normalise(url)
    shown = safe_url(u)
    kwargs: dict[str, Any] = {
        "echo": echo,
        "hide_parameters": True,  # bound values (patient data) never appear in errors/logs
        "json_serializer": json_dumps,
    }
    if u.get_backend_name() == "sqlite":
        _prepare_sqlite_file(u, shown)
        kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif u.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": PG_CONNECT_TIMEOUT_S}
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(u, **kwargs)
    except (exc.NoSuchModuleError, ModuleNotFoundError, ImportError) as err:
        raise ResultsDatabaseError(
            f"no driver for the results database {shown} ({_first_line(err)})",
            "use sqlite:/// or postgresql:// (psycopg 3 is installed with cmcl), or install "
            "the driver the URL names",
        ) from None
    if u.get_backend_name() == "sqlite":
        _install_sqlite_hooks(engine, cache_mib)
    return engine


@contextmanager
def translate_errors(engine: sa.Engine, what: str) -> Iterator[None]:
    """Turn SQLAlchemy/driver errors into ResultsDatabaseError with a PHI-free message.

    Args:
        engine: the results engine (for naming the database).
        what: the operation, e.g. "write the results of run 3".
    """
    shown = safe_url(engine.url)
    try:
        yield
    except (exc.IntegrityError, exc.DataError) as err:
        raise ResultsIntegrityError(
            f"results database {shown}: could not {what}: {scrub(_first_line(err), engine.url)}",
            "a bug in the caller (duplicate key, missing run, value too long); nothing was written",
        ) from None
    except (exc.OperationalError, exc.InterfaceError, exc.ProgrammingError) as err:
        first = scrub(_first_line(err), engine.url)
        raise ResultsDatabaseError(
            f"results database {shown}: could not {what}: {first}",
            "check that the database server is running and reachable, that the credentials "
            "in the environment are right and that the database is writable; then retry",
            transient=is_transient(first),
        ) from None


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", "db:migrations")
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "db/migrations/versions holds no revision"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The revision the database is at, or None for an empty (unmigrated) database."""
    with translate_errors(engine, "read the schema version"), engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return ctx.get_current_revision()


def apply_migrations(engine: sa.Engine) -> str:
    """Apply pending migrations (``alembic upgrade head``) under a cross-process lock.

    Returns:
        The head revision the database is now at.
    """
    head = head_revision()
    if current_revision(engine) == head:
        return head  # the common case: nothing to do, no lock taken
    cfg = _alembic_config()
    with translate_errors(engine, "apply the schema migrations"), engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            cfg.attributes["connection"] = conn
            with _ALEMBIC_LOCK:
                command.upgrade(cfg, "head")
    log.info("results database %s migrated to revision %s", safe_url(engine.url), head)
    return head


def open_results(
    url: str, *, migrate: bool = True, echo: bool = False, cache_mib: int = SQLITE_CACHE_MIB
) -> sa.Engine:
    """Open the results database, check it is reachable, and bring its schema to head.

    Args:
        url: SQLAlchemy URL, already env-expanded (``sqlite:///cmcl.db``,
            ``postgresql://user:pw@host/db``); a SQLite file's folder is created.
        migrate: apply pending Alembic migrations (default). False only checks the connection.
        echo: log SQL (bound values stay hidden).
        cache_mib: SQLite's page cache per connection (it fills up to this as the file grows;
            ignored for PostgreSQL).

    Returns:
        An engine for the write/read helpers; dispose it when done.

    Raises:
        ResultsDatabaseError: bad URL, missing driver, unreachable server, bad credentials,
            read-only file, or a failed migration. The message hides the password.
    """
    engine = create_results_engine(url, echo=echo, cache_mib=cache_mib)
    try:
        with translate_errors(engine, "connect"), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        if migrate:
            apply_migrations(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@contextmanager
def results_engine(url: str, cache_mib: int = SQLITE_CACHE_MIB) -> Iterator[sa.Engine]:
    """:func:`open_results` as a context manager: the engine is disposed on exit."""
    engine = open_results(url, cache_mib=cache_mib)
    try:
        yield engine
    finally:
        engine.dispose()


def upgrade(url: str) -> str:
    """Migrate the database at ``url`` to head (``cmcl db upgrade``); returns the revision."""
    engine = open_results(url, migrate=True)
    try:
        rev = current_revision(engine)
    finally:
        engine.dispose()
    assert rev is not None
    return rev
