"""Bulk-write machinery shared by the write helpers (not a public API: use db.write).

Write transactions (``BEGIN IMMEDIATE`` on SQLite, so a concurrent writer waits for the busy
timeout instead of failing), dialect-dispatched upserts (SQLAlchemy has no backend-neutral
upsert), and the fast latent paths: raw sqlite3 executemany with z pre-encoded as JSON text,
PostgreSQL COPY. Benchmarked in benchmarks/db_write.py.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from db.engine import SQLITE_BEGIN_OPTION, translate_errors
from db.models import Latent
from db.records import LatentRow

T = TypeVar("T")
#: rows per executemany batch; bounds memory for streamed iterables (not a bind limit:
#: executemany binds one row per statement, so SQLite's 32766-parameter cap never applies)
CHUNK = 2000
LATENT_CHUNK = 10000
#: an IN (...) list binds one parameter per key; SQLite builds since 3.32 allow 32766
MAX_IN_LIST = 30000


def chunks(rows: Iterable[T], size: int) -> Iterator[list[T]]:
    """Lists of at most ``size`` items from any iterable (streams generators)."""
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


@contextmanager
def write_tx(engine: sa.Engine, what: str) -> Iterator[sa.Connection]:
    """One write transaction (BEGIN IMMEDIATE on SQLite), errors translated."""
    with translate_errors(engine, what), engine.connect() as conn:
        conn.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT construct, which offers ``on_conflict_do_update``."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts support SQLite and PostgreSQL, not {conn.dialect.name}")


def upsert(
    conn: sa.Connection, table: sa.Table, key: list[str], rows: list[dict[str, Any]], keep: set[str]
) -> None:
    """INSERT rows; on a conflict on ``key`` update every column except ``key`` and ``keep``."""
    stmt = dialect_insert(conn, table)
    update = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in {*key, *keep}}
    conn.execute(stmt.on_conflict_do_update(index_elements=key, set_=update), rows)


def z_list(z: Any, i: int, m: int | None) -> list[float]:
    vals = z.tolist() if hasattr(z, "tolist") else list(z)
    out = list(map(float, vals))
    if m is not None and len(out) != m:
        raise ValueError(f"latent row {i}: z has {len(out)} values, expected m = {m}")
    if not all(map(math.isfinite, out)):
        raise ValueError(f"latent row {i}: z contains NaN or infinity; refusing to store it")
    return out


def insert_latents(
    conn: sa.Connection, run_id: int, latents: Iterable[LatentRow], m: int | None, scored: bool
) -> tuple[int, int | None]:
    """Insert latents in executemany batches (plain INSERT); returns (rows, m)."""
    n = 0
    for batch in chunks(latents, LATENT_CHUNK):
        data, m = latent_dicts(batch, run_id, n, m, scored)
        if conn.dialect.name == "postgresql":
            copy_latents_pg(conn, data)
        elif conn.dialect.name == "sqlite":
            insert_latents_sqlite(conn, data)
        else:
            conn.execute(sa.insert(Latent.__table__), data)
        n += len(data)
    return n, m


_INSERT_LATENTS = (
    "INSERT INTO cmcl_latents (run_id, image_key, patient_key, z, scored) VALUES (?, ?, ?, ?, ?)"
)


def insert_latents_sqlite(conn: sa.Connection, data: list[dict[str, Any]]) -> None:
    """executemany straight to sqlite3 with z pre-encoded as JSON text.

    Skips SQLAlchemy's per-row bind processing (about half the CPU time for 100k rows);
    ``repr`` of a finite float is valid JSON and parses back to the same double. The
    statement still runs on the SQLAlchemy connection, so errors hide their parameters.
    """
    rows = []
    for d in data:
        z = f"[{','.join(map(repr, d['z']))}]"
        rows.append((d["run_id"], d["image_key"], d["patient_key"], z, int(d["scored"])))
    conn.exec_driver_sql(_INSERT_LATENTS, rows)


_COPY_LATENTS = "COPY cmcl_latents (run_id, image_key, patient_key, z, scored) FROM STDIN"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_latents_pg(conn: sa.Connection, data: list[dict[str, Any]]) -> None:
    """Bulk-load latents with PostgreSQL COPY (text format) inside the open transaction.

    psycopg's executemany dumps each FLOAT8[] through a Python-level list dumper (~4x slower
    for 100k rows); COPY is the documented bulk path. ``repr`` of a finite float is the
    shortest string that parses back to the same double, so z round-trips exactly.
    """
    lines = [
        f"{d['run_id']}\t{d['image_key'].translate(_COPY_ESCAPES)}\t"
        f"{d['patient_key'].translate(_COPY_ESCAPES)}\t{{{','.join(map(repr, d['z']))}}}\t"
        f"{'t' if d['scored'] else 'f'}\n"
        for d in data
    ]
    raw = conn.connection.driver_connection
    try:
        with raw.cursor() as cur, cur.copy(_COPY_LATENTS) as copy:
            copy.write("".join(lines))
    except psycopg.Error as err:  # not wrapped by SQLAlchemy: give it SQLAlchemy's type
        raise sa.exc.DBAPIError.instance(
            _COPY_LATENTS, None, err, psycopg.Error, hide_parameters=True, dialect=conn.dialect
        ) from None


def latent_dicts(
    batch: list[LatentRow], run_id: int, start: int, m: int | None, scored: bool
) -> tuple[list[dict[str, Any]], int | None]:
    """Validated row dicts for a batch of latents; fixes m from the first row if unset."""
    data = []
    for i, r in enumerate(batch, start):
        z = z_list(r.z, i, m)
        m = len(z) if m is None else m
        row = {"run_id": run_id, "image_key": r.image_key, "patient_key": r.patient_key}
        data.append(row | {"z": z, "scored": scored})
    return data, m
