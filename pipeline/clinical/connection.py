"""Read-only connections to the clinical database, and PHI-free driver messages.

SQLite opens through a ``file:...?mode=ro&uri=true`` URL (a missing file is an error, never a
new empty database), PostgreSQL runs in a ``READ ONLY`` transaction; other backends open plainly
(give them a read-only account). The engine hides bound parameters, and a driver's error is cut
to its first line with SQL literals and long numbers masked (:func:`safe_message`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, unquote

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection

from db.engine import PG_CONNECT_TIMEOUT_S
from db.errors import DatabaseUnavailable, is_transient
from db.urls import safe_url
from pipeline.config import expand_env
from pipeline.errors import ConfigError
from pipeline.redact import redact


def readonly_url(url: str) -> URL:
    """The SQLAlchemy URL to open, made read-only where the backend allows it.

    ``${ENV}`` references are expanded. A SQLite file URL becomes
    ``sqlite:///file:<path>?mode=ro&uri=true``; a missing SQLite file is refused.

    Raises:
        ConfigError: unparseable URL or unset environment variable.
        DatabaseUnavailable: the SQLite file does not exist.
    """
    try:
        u = sa.engine.make_url(expand_env(url))
    except sa.exc.ArgumentError:
        raise ConfigError(
            "clinical.url is not a valid SQLAlchemy URL",
            "write it as dialect[+driver]://user@host/database (e.g. sqlite:///clinic.db)",
        ) from None
    if u.get_backend_name() != "sqlite":
        return u
    db = u.database or ""
    if db in ("", ":memory:") or u.query.get("uri") == "true":
        return u  # in-memory or already a URI: opened as given
    path = Path(db).expanduser().resolve()
    if not path.is_file():
        raise DatabaseUnavailable(
            f"the clinical SQLite database {path} does not exist",
            "check clinical.url (sqlite:////absolute/path.db, or a path relative to the "
            "working directory)",
        )
    return u.set(
        database=f"file:{quote(str(path))}", query={**u.query, "mode": "ro", "uri": "true"}
    )


def _is_postgres(u: URL) -> bool:
    return u.get_backend_name() == "postgresql"


def describe(u: URL) -> str:
    """The database for messages: host/file, never a password (SQLite shown as its path)."""
    if u.get_backend_name() == "sqlite" and u.query.get("mode") == "ro":
        return f"SQLite file {unquote((u.database or '').removeprefix('file:'))} (read-only)"
    return safe_url(u)


@contextmanager
def readonly_connection(url: str) -> Iterator[Connection]:
    """A connection inside a transaction that cannot write (SQLite mode=ro, PostgreSQL READ ONLY).

    Args:
        url: the clinical database URL (``${ENV}`` references allowed).

    Yields:
        An open connection; the transaction is rolled back on exit.

    Raises:
        ConfigError, DatabaseUnavailable: see ``readonly_url``; unreachable database.
    """
    u = readonly_url(url)
    connect_args = {"connect_timeout": PG_CONNECT_TIMEOUT_S} if _is_postgres(u) else {}
    try:
        engine = sa.create_engine(
            u, hide_parameters=True, poolclass=sa.pool.NullPool, connect_args=connect_args
        )
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError, ImportError) as err:
        raise ConfigError(
            f"cannot open clinical.url {describe(u)}: unknown backend or driver "
            f"({type(err).__name__})",
            "use an installed SQLAlchemy dialect, e.g. postgresql:// or sqlite:///",
        ) from None
    try:
        try:
            conn = engine.connect()
        except sa.exc.DBAPIError as err:
            message = safe_message(err)
            raise DatabaseUnavailable(
                f"cannot connect to the clinical database {describe(u)}: {message}",
                "check clinical.url, that the server is running and reachable, and the "
                "password's environment variable",
                transient=is_transient(message),
            ) from None
        with conn:
            trans = conn.begin()
            try:
                if _is_postgres(u):
                    conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                yield conn
            finally:
                trans.rollback()
    finally:
        engine.dispose()


_QUOTED = re.compile(r"'[^']*'")
_LONG_NUMBER = re.compile(r"(?<![\w.])\d{4,}(?![\w.])")
_PORT_BEFORE = re.compile(r"(?:\bport |:)$")


def _mask_number(m: re.Match[str]) -> str:
    """A digit run that may be a value (an MRN) is masked; a port (``port 5432``, ``:5432``)
    is kept so the message still says where the server is."""
    port = _PORT_BEFORE.search(m.string, 0, m.start()) is not None and int(m[0]) <= 65535
    return m[0] if port else "<n>"


def safe_message(err: sa.exc.DBAPIError) -> str:
    """The driver's first error line, with SQL literals, values and identifiers redacted.

    Drivers quote fragments of the statement and, for type errors, the offending value; the
    query text is not logged (it may name patients), so literals and long digit runs are
    masked, and PHI, UIDs and e-mail addresses are redacted (:func:`pipeline.redact.redact`).
    Host names, IPv4 addresses and ports stay: they say which server failed.
    """
    orig = err.orig if err.orig is not None else err
    lines = str(orig).strip().splitlines()
    first = lines[0] if lines else type(orig).__name__
    if first.lower().startswith("invalid input"):
        first = first.split(":", 1)[0] + ": <value redacted>"
    first = redact(_QUOTED.sub("'<redacted>'", first))
    first = _LONG_NUMBER.sub(_mask_number, first)
    return f"{type(orig).__name__}: {first[:300]}"


def check_clinical_source(url: str) -> None:
    """Open and close a read-only connection to the clinical database (a fail-fast check).

    Run before any file is ingested, so a wrong ``clinical.url`` (a missing SQLite file, an
    unknown database or role, a wrong password, a server that is down) costs nothing.

    Raises:
        ConfigError: the URL cannot be parsed or names an unknown backend/driver.
        DatabaseUnavailable: the database cannot be reached or opened (``transient`` when a
            retry may help).
    """
    with readonly_connection(url):
        pass
