"""Write helpers: idempotent catalog upserts, run life cycle, all-or-nothing run results.

All writes go through Core statements in executemany batches (and COPY for latents on
PostgreSQL; see db/bulk.py), not ORM unit-of-work objects: 100k latent rows take seconds of
CPU (benchmarks/db_write.py). Errors surface as ``db.errors.ResultsDatabaseError`` without
any bound value in the message.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from db.bulk import (
    CHUNK,
    LATENT_CHUNK,
    MAX_IN_LIST,
    chunks,
    insert_latents,
    latent_dicts,
    upsert,
    write_tx,
)
from db.models import Artifact, Edge, Image, Latent, Quarantine, Run, RunVariable, utcnow
from db.records import (
    ArtifactRow,
    EdgeRow,
    ImageRow,
    LatentRow,
    QuarantineRow,
    RunStatus,
    VariableRow,
)
from db.urls import mask_passwords

log = logging.getLogger(__name__)

_FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CRASHED)
_MAX_ERROR = 4000

# --- catalog and quarantine -----------------------------------------------------------------


def _write_stamped(
    engine: sa.Engine,
    what: str,
    rows: Iterable[Any],
    chunk_size: int,
    write: Callable[[sa.Connection, list[dict[str, Any]]], None],
) -> int:
    """``write`` each batch of records, as dicts seen now, in one transaction; returns rows.

    Every row gets ``first_seen_at = last_seen_at = now``; the upserts keep the first one.
    """
    n = 0
    with write_tx(engine, what) as conn:
        for batch in chunks(rows, min(chunk_size, MAX_IN_LIST)):
            now = utcnow()
            data = [asdict(r) | {"first_seen_at": now, "last_seen_at": now} for r in batch]
            write(conn, data)
            n += len(data)
    return n


def upsert_images(engine: sa.Engine, rows: Iterable[ImageRow], chunk_size: int = CHUNK) -> int:
    """Add or refresh catalog rows; idempotent on ``image_key``.

    A re-upserted row keeps ``first_seen_at`` and gets a new ``last_seen_at``. Each file ends
    in exactly one table: its ``file_key`` is removed from the quarantine, and a catalog row
    that held the same ``file_key`` under another image (the file was replaced in place) is
    dropped. An ``image_key`` already catalogued under another ``file_key`` moves to the new
    file (a renamed file); quarantining true duplicate instances is the caller's job.

    Args:
        engine: results engine from ``open_results``.
        rows: the accepted images (streamed in chunks).
        chunk_size: rows per executemany batch (at most MAX_IN_LIST, for SQLite's bind limit).

    Returns:
        The number of rows written (inserted or updated).
    """
    images, quarantine = Image.__table__, Quarantine.__table__

    def write(conn: sa.Connection, data: list[dict[str, Any]]) -> None:
        file_keys = [d["file_key"] for d in data]
        conn.execute(sa.delete(quarantine).where(quarantine.c.file_key.in_(file_keys)))
        # rare: the same file path now holds another instance; drop the stale row
        conn.execute(
            sa.delete(images).where(
                images.c.file_key == sa.bindparam("fk"),
                images.c.image_key != sa.bindparam("ik"),
            ),
            [{"fk": d["file_key"], "ik": d["image_key"]} for d in data],
        )
        upsert(conn, images, ["image_key"], data, keep={"first_seen_at"})

    return _write_stamped(engine, "update the image catalog", rows, chunk_size, write)


def upsert_quarantine(
    engine: sa.Engine, rows: Iterable[QuarantineRow], chunk_size: int = CHUNK
) -> int:
    """Add or refresh quarantine rows; idempotent on ``file_key``.

    A quarantined file leaves the catalog (a file that went bad is no longer an image).

    Returns:
        The number of rows written (inserted or updated).
    """
    images, quarantine = Image.__table__, Quarantine.__table__

    def write(conn: sa.Connection, data: list[dict[str, Any]]) -> None:
        conn.execute(sa.delete(images).where(images.c.file_key.in_([d["file_key"] for d in data])))
        upsert(conn, quarantine, ["file_key"], data, keep={"id", "first_seen_at"})

    return _write_stamped(engine, "update the quarantine", rows, chunk_size, write)


def remove_quarantine(engine: sa.Engine, file_keys: Iterable[str]) -> int:
    """Delete quarantine rows (e.g. files that were fixed or deleted); returns rows removed."""
    return _delete_by_file_key(engine, Quarantine.__table__, file_keys, "update the quarantine")


def remove_images(engine: sa.Engine, file_keys: Iterable[str]) -> int:
    """Delete catalog rows by file (files that disappeared from the source); returns rows."""
    return _delete_by_file_key(engine, Image.__table__, file_keys, "update the image catalog")


def _delete_by_file_key(
    engine: sa.Engine, table: sa.Table, file_keys: Iterable[str], what: str
) -> int:
    n = 0
    with write_tx(engine, what) as conn:
        for batch in chunks(file_keys, CHUNK):
            n += conn.execute(sa.delete(table).where(table.c.file_key.in_(batch))).rowcount
    return n


# --- run life cycle -------------------------------------------------------------------------


def start_run(
    engine: sa.Engine,
    *,
    config: dict[str, Any],
    code_version: str,
    data_fingerprint: str | None = None,
    device: str | None = None,
) -> int:
    """Record a new run with status 'running' and return its id.

    Args:
        config: the validated config as JSON-able data, without secrets (a literal password
            in a URL is masked anyway).
        code_version: package version (and git commit when known).
        data_fingerprint: sha256 over the sorted input keys/content hashes, if known yet.
        device: e.g. "cuda:0" or "cpu", if known yet.
    """
    now = utcnow()
    values = dict(
        status=RunStatus.RUNNING.value,
        started_at=now,
        heartbeat_at=now,
        config=mask_passwords(config),
        code_version=code_version,
        data_fingerprint=data_fingerprint,
        device=device,
    )
    with write_tx(engine, "record a new run") as conn:
        run_id = conn.execute(sa.insert(Run.__table__).values(**values)).inserted_primary_key[0]
    log.info("started run %s", run_id)
    return int(run_id)


def heartbeat(engine: sa.Engine, run_id: int) -> None:
    """Mark a running run alive now (call every minute or so from a long task)."""
    runs = Run.__table__
    with write_tx(engine, f"update run {run_id}") as conn:
        res = conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
            .values(heartbeat_at=utcnow())
        )
    if res.rowcount == 0:
        log.warning("heartbeat for run %s ignored: it is not running", run_id)


def _closing_values(status: RunStatus, **fields: Any) -> dict[str, Any]:
    """The columns that close a run: its status, finished_at, and each field given (not None)."""
    values: dict[str, Any] = {"status": status.value, "finished_at": utcnow()}
    return values | {k: v for k, v in fields.items() if v is not None}


def finish_run(
    engine: sa.Engine,
    run_id: int,
    *,
    status: str,
    metrics: dict[str, Any] | None = None,
    error: str | None = None,
    n_images: int | None = None,
    n_patients: int | None = None,
    device: str | None = None,
    data_fingerprint: str | None = None,
) -> None:
    """Set a run's final status and finished_at, plus whichever fields are given.

    Args:
        status: 'succeeded', 'failed' or 'crashed'.
        metrics: replaces the stored metrics when given (NaN/inf are stored as null).
        error: a PHI-free message for failed runs (cut to 4000 characters).
        n_images, n_patients, device, data_fingerprint: set when given.

    Raises:
        ValueError: unknown status or run id.
    """
    st = RunStatus(status)
    if st not in _FINISHED:
        raise ValueError(f"finish_run needs one of {[s.value for s in _FINISHED]}, got {status!r}")
    values = _closing_values(
        st,
        metrics=metrics,
        error=None if error is None else error[:_MAX_ERROR],
        n_images=n_images,
        n_patients=n_patients,
        device=device,
        data_fingerprint=data_fingerprint,
    )
    runs = Run.__table__
    with write_tx(engine, f"finish run {run_id}") as conn:
        res = conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
        if res.rowcount != 1:
            raise ValueError(f"run {run_id} does not exist in the results database")
    log.info("run %s finished: %s", run_id, st.value)


@contextmanager
def keep_alive(engine: sa.Engine, run_id: int, every_s: float = 30.0) -> Iterator[None]:
    """Send ``heartbeat`` every ``every_s`` seconds from a daemon thread while the block runs.

    Wrap long tasks (training) so ``mark_stale_runs`` can tell a live run from a dead one;
    use an ``older_than_s`` several times ``every_s``. A failed heartbeat is logged, never
    raised into the task.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every_s):
            try:
                heartbeat(engine, run_id)
            except Exception as err:  # noqa: BLE001 - a missed beat must not kill training
                log.warning("heartbeat for run %s failed: %s", run_id, type(err).__name__)

    thread = threading.Thread(target=beat, name=f"cmcl-heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s + 5)


def mark_stale_runs(engine: sa.Engine, older_than_s: float) -> int:
    """Mark 'running' runs whose last heartbeat is older than ``older_than_s`` as crashed.

    A run killed by SIGKILL or a lost node cannot record its own end; this finds it.

    Returns:
        The number of runs marked crashed.
    """
    runs = Run.__table__
    now = utcnow()
    cutoff = now - timedelta(seconds=older_than_s)
    last_alive = sa.func.coalesce(runs.c.heartbeat_at, runs.c.started_at)
    with write_tx(engine, "mark stale runs") as conn:
        res = conn.execute(
            sa.update(runs)
            .where(runs.c.status == RunStatus.RUNNING.value, last_alive < cutoff)
            .values(
                status=RunStatus.CRASHED.value,
                finished_at=now,
                error=f"no heartbeat for over {older_than_s:g} s: the process presumably died",
            )
        )
    if res.rowcount:
        log.warning("marked %d stale run(s) as crashed", res.rowcount)
    return int(res.rowcount)


# --- run results ----------------------------------------------------------------------------


def _lock_run(conn: sa.Connection, run_id: int) -> None:
    runs = Run.__table__
    q = sa.select(runs.c.id).where(runs.c.id == run_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    if conn.execute(q).first() is None:
        raise ValueError(f"run {run_id} does not exist in the results database")


def write_run_results(
    engine: sa.Engine,
    run_id: int,
    *,
    edges: Sequence[EdgeRow],
    latents: Iterable[LatentRow],
    variables: Sequence[VariableRow] = (),
    artifacts: Sequence[ArtifactRow] = (),
    metrics: dict[str, Any] | None = None,
    n_images: int | None = None,
    n_patients: int | None = None,
    device: str | None = None,
    data_fingerprint: str | None = None,
) -> None:
    """Write a run's results and mark it succeeded, in ONE transaction.

    Replaces whatever edges, latents, variables and artifacts the run had (so a retried
    write-back is idempotent), then sets status 'succeeded' and finished_at (and metrics when
    given). Any failure (a z of the wrong length, a duplicate key, a lost connection) rolls
    everything back: the run keeps its previous status and has no partial rows; the caller
    then records the failure with ``finish_run(status="failed")``.

    Args:
        engine: results engine.
        run_id: from ``start_run``.
        edges: thresholded edges cause -> effect.
        latents: one row per image, all z of the same length m (streamed in batches).
        variables: the graph's nodes; when latent ones are given, m must equal their count.
        artifacts: files with sha256 (e.g. encoder.onnx, decoder.onnx).
        metrics: replaces the run's metrics when given.
        n_images, n_patients, device, data_fingerprint: set on the run row when given.

    Raises:
        ValueError: inconsistent input (z length, non-finite values, unknown run).
        ResultsDatabaseError: the database refused the write or went away.
    """
    n_latent_vars = sum(1 for v in variables if v.kind == "latent")
    m_expected = n_latent_vars or None
    now = utcnow()
    with write_tx(engine, f"write the results of run {run_id}") as conn:
        _lock_run(conn, run_id)
        for model in (Edge, Latent, RunVariable, Artifact):
            t = model.__table__
            conn.execute(sa.delete(t).where(t.c.run_id == run_id))
        if edges:
            conn.execute(
                sa.insert(Edge.__table__),
                [asdict(e) | {"run_id": run_id, "weight": float(e.weight)} for e in edges],
            )
        if variables:
            var_rows = [asdict(v) | {"run_id": run_id} for v in variables]
            conn.execute(sa.insert(RunVariable.__table__), var_rows)
        if artifacts:
            conn.execute(
                sa.insert(Artifact.__table__),
                [asdict(a) | {"run_id": run_id, "created_at": now} for a in artifacts],
            )
        n, m = insert_latents(conn, run_id, latents, m_expected, scored=False)
        values = _closing_values(
            RunStatus.SUCCEEDED,
            metrics=metrics,
            n_images=n_images,
            n_patients=n_patients,
            device=device,
            data_fingerprint=data_fingerprint,
        )
        runs = Run.__table__
        conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))
    log.info("run %s: wrote %d edges, %d latents (m = %s)", run_id, len(edges), n, m)


def write_latents(
    engine: sa.Engine, run_id: int, latents: Iterable[LatentRow], *, scored: bool = True
) -> int:
    """Add or replace latents of an existing run (``cmcl score``), in one transaction.

    Idempotent on (run_id, image_key). z must have the length of the run's existing latents.

    Args:
        scored: True for latents computed after training (ONNX scoring of new images).

    Returns:
        The number of rows written.
    """
    table = Latent.__table__
    n = 0
    with write_tx(engine, f"write latents of run {run_id}") as conn:
        _lock_run(conn, run_id)
        first = conn.execute(sa.select(table.c.z).where(table.c.run_id == run_id).limit(1))
        row = first.first()
        m = None if row is None else len(row[0])
        for batch in chunks(latents, LATENT_CHUNK):
            data, m = latent_dicts(batch, run_id, n, m, scored)
            upsert(conn, table, ["run_id", "image_key"], data, keep=set())
            n += len(data)
    log.info("run %s: wrote %d scored latents", run_id, n)
    return n
