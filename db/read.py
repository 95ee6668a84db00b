"""Read helpers: runs, edges, latents, artifacts, the catalog and quarantine counts.

They return plain dicts and lists (ORM objects stay in ``db``). Timestamps are
timezone-aware UTC; ``z`` is a list of floats on both backends.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from db.bulk import MAX_IN_LIST, chunks
from db.engine import translate_errors
from db.models import Artifact, Edge, Image, Latent, Quarantine, Run, RunVariable


def _rows(engine: sa.Engine, what: str, query: sa.Select[Any]) -> list[dict[str, Any]]:
    with translate_errors(engine, what), engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]


def get_run(engine: sa.Engine, run_id: int) -> dict[str, Any] | None:
    """All columns of one run, or None when it does not exist."""
    runs = Run.__table__
    rows = _rows(engine, f"read run {run_id}", sa.select(runs).where(runs.c.id == run_id))
    return rows[0] if rows else None


def latest_run(engine: sa.Engine, status: str | None = "succeeded") -> dict[str, Any] | None:
    """The run with the highest id and the given status (any status when None), or None."""
    runs = Run.__table__
    q = sa.select(runs).order_by(runs.c.id.desc()).limit(1)
    if status is not None:
        q = q.where(runs.c.status == status)
    rows = _rows(engine, "read the latest run", q)
    return rows[0] if rows else None


def find_run(
    engine: sa.Engine, *, data_fingerprint: str, status: str | None = "succeeded"
) -> dict[str, Any] | None:
    """The newest run over the same input data (e.g. to skip an identical re-run), or None.

    Args:
        data_fingerprint: the sha256 the pipeline stored with ``start_run``/``finish_run``.
        status: only runs with this status; None for any.
    """
    runs = Run.__table__
    q = sa.select(runs).where(runs.c.data_fingerprint == data_fingerprint)
    if status is not None:
        q = q.where(runs.c.status == status)
    rows = _rows(engine, "find a run", q.order_by(runs.c.id.desc()).limit(1))
    return rows[0] if rows else None


def list_runs(engine: sa.Engine, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs first (id, status, timings, counts, device, error; no config)."""
    runs = Run.__table__
    cols = [c for c in runs.columns if c.name not in ("config", "metrics")]
    return _rows(engine, "list runs", sa.select(*cols).order_by(runs.c.id.desc()).limit(limit))


def read_edges(engine: sa.Engine, run_id: int | None = None) -> list[dict[str, Any]]:
    """A run's edges, strongest first (|weight| descending, then source, target).

    Args:
        run_id: the run; None means the latest succeeded run ([] when there is none).

    Returns:
        Dicts with run_id, source, target, weight, source_kind, target_kind, direction.
    """
    if run_id is None:
        run = latest_run(engine)
        if run is None:
            return []
        run_id = int(run["id"])
    t = Edge.__table__
    q = (
        sa.select(t)
        .where(t.c.run_id == run_id)
        .order_by(sa.func.abs(t.c.weight).desc(), t.c.source, t.c.target)
    )
    return _rows(engine, f"read the edges of run {run_id}", q)


def read_variables(engine: sa.Engine, run_id: int) -> list[dict[str, Any]]:
    """A run's graph nodes in adjacency order (name, kind, var_type, position)."""
    t = RunVariable.__table__
    q = sa.select(t).where(t.c.run_id == run_id).order_by(t.c.position, t.c.name)
    return _rows(engine, f"read the variables of run {run_id}", q)


def read_latents(engine: sa.Engine, run_id: int) -> list[dict[str, Any]]:
    """A run's latents ordered by image_key: image_key, patient_key, z (list), scored."""
    t = Latent.__table__
    q = (
        sa.select(t.c.image_key, t.c.patient_key, t.c.z, t.c.scored)
        .where(t.c.run_id == run_id)
        .order_by(t.c.image_key)
    )
    rows = _rows(engine, f"read the latents of run {run_id}", q)
    for r in rows:
        r["z"] = [float(v) for v in r["z"]]
    return rows


def get_artifacts(engine: sa.Engine, run_id: int) -> list[dict[str, Any]]:
    """A run's artifacts (name, relpath, sha256, size_bytes, kind, created_at) by name."""
    t = Artifact.__table__
    q = sa.select(t).where(t.c.run_id == run_id).order_by(t.c.name)
    return _rows(engine, f"read the artifacts of run {run_id}", q)


def catalog_hashes(engine: sa.Engine) -> dict[str, str]:
    """content_sha256 -> image_key over the catalog (incremental ingest skips known content)."""
    t = Image.__table__
    rows = _rows(engine, "read the catalog", sa.select(t.c.content_sha256, t.c.image_key))
    return {r["content_sha256"]: r["image_key"] for r in rows}


def catalog_file_hashes(engine: sa.Engine) -> dict[str, str]:
    """file_key -> content_sha256 over the catalog (a file unchanged at the same path)."""
    t = Image.__table__
    rows = _rows(engine, "read the catalog", sa.select(t.c.file_key, t.c.content_sha256))
    return {r["file_key"]: r["content_sha256"] for r in rows}


def quarantine_file_hashes(engine: sa.Engine) -> dict[str, str | None]:
    """file_key -> content_sha256 over the quarantine (skip re-validating an unchanged bad file)."""
    t = Quarantine.__table__
    rows = _rows(engine, "read the quarantine", sa.select(t.c.file_key, t.c.content_sha256))
    return {r["file_key"]: r["content_sha256"] for r in rows}


def read_catalog(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every catalog row (all columns), ordered by image_key."""
    t = Image.__table__
    return _rows(engine, "read the catalog", sa.select(t).order_by(t.c.image_key))


def stream_rows(
    engine: sa.Engine, table: str, columns: Sequence[str], batch: int = 2000
) -> Iterator[dict[str, Any]]:
    """The rows of ``cmcl_images`` or ``cmcl_quarantine`` (only ``columns``), fetched ``batch`` at
    a time, so a large table is never held whole (consume the iterator fully)."""
    t = {"cmcl_images": Image.__table__, "cmcl_quarantine": Quarantine.__table__}[table]
    q = sa.select(*[t.c[name] for name in columns])
    with translate_errors(engine, f"read {table}"), engine.connect() as conn:
        for r in conn.execution_options(yield_per=batch).execute(q):
            yield dict(r._mapping)


def image_holders(engine: sa.Engine, image_keys: Sequence[str]) -> dict[str, str]:
    """image_key -> file_key of the catalog rows holding any of ``image_keys``."""
    t = Image.__table__
    out: dict[str, str] = {}
    for batch in chunks(image_keys, MAX_IN_LIST):
        q = sa.select(t.c.image_key, t.c.file_key).where(t.c.image_key.in_(batch))
        out |= {r["image_key"]: r["file_key"] for r in _rows(engine, "read the catalog", q)}
    return out


def catalog_of_files(
    engine: sa.Engine, file_keys: Sequence[str], columns: Sequence[str]
) -> list[dict[str, Any]]:
    """The catalog rows (only ``columns``) of the files ``file_keys``, in no particular order."""
    t = Image.__table__
    cols = [t.c[name] for name in columns]
    out: list[dict[str, Any]] = []
    for batch in chunks(file_keys, MAX_IN_LIST):
        out += _rows(engine, "read the catalog", sa.select(*cols).where(t.c.file_key.in_(batch)))
    return out


def read_quarantine(engine: sa.Engine) -> list[dict[str, Any]]:
    """Every quarantine row (all columns), ordered by reason then file_key."""
    t = Quarantine.__table__
    return _rows(engine, "read the quarantine", sa.select(t).order_by(t.c.reason, t.c.file_key))


def quarantine_counts(engine: sa.Engine) -> dict[str, int]:
    """Number of quarantined files per reason code."""
    t = Quarantine.__table__
    q = sa.select(t.c.reason, sa.func.count().label("n")).group_by(t.c.reason).order_by(t.c.reason)
    return {r["reason"]: int(r["n"]) for r in _rows(engine, "read the quarantine", q)}


def catalog_count(engine: sa.Engine) -> int:
    """Number of images (instances) in the catalog."""
    q = sa.select(sa.func.count().label("n")).select_from(Image.__table__)
    return int(_rows(engine, "read the catalog", q)[0]["n"])
