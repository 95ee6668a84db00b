"""SQLAlchemy 2 models of the results database (the contract is ARCHITECTURE.md, "Results tables").

Tables, all prefixed ``cmcl_`` so the schema can share a database with other applications:

- ``cmcl_runs``: one row per pipeline run (status, timings, config, metrics, provenance).
- ``cmcl_edges``: a run's learned edges cause -> effect; ``cmcl_run_variables``: its nodes.
- ``cmcl_latents``: a run's posterior means z per image (JSON array; FLOAT8[] on PostgreSQL).
- ``cmcl_artifacts``: files a run produced, with sha256 (ONNX models are verified on load).
- ``cmcl_images`` / ``cmcl_quarantine``: the catalog and the rejected files; a file is in
  exactly one of them (the write helpers keep that invariant).

Design choices beyond the brief: run ids are never reused (``sqlite_autoincrement``; users
type them); the run's children cascade on delete; enumerated columns are strings with CHECK
constraints (readable in plain SQL, no PostgreSQL ENUM type to migrate); every constraint and
index is named by ``NAMING_CONVENTION`` so migrations can address them on both backends;
latents carry ``scored`` (True when written by ``cmcl score`` rather than by training).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    false,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

KEY = 64  # hex HMAC-SHA256 / SHA-256 digest length
#: JSON documents (config, metrics): JSONB on PostgreSQL so plain SQL can query into them.
JSONDoc = JSON().with_variant(JSONB(), "postgresql")
#: A vector of floats: a JSON array on SQLite, FLOAT8[] on PostgreSQL; both read back a list.
FloatVector = JSON().with_variant(ARRAY(Float()), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware (UTC).

    PostgreSQL stores TIMESTAMPTZ; SQLite has no time zones, so values are converted to UTC
    and stored naive (string order then equals time order, which ``mark_stale_runs`` uses).
    Naive datetimes are refused: they are a bug waiting to shift a run by hours.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


RUN_STATUSES = ("running", "succeeded", "failed", "crashed")
VAR_KINDS = ("clinical", "latent")
DIRECTIONS = ("causal", "anti_causal", "other")
ORIENTATIONS = ("knowledge", "data", "undetermined")


class Run(Base):
    """``cmcl_runs``: one pipeline run."""

    __tablename__ = "cmcl_runs"
    __table_args__ = (
        _one_of("status", RUN_STATUSES, "status"),
        Index(None, "status", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)
    code_version: Mapped[str] = mapped_column(String(128))
    data_fingerprint: Mapped[str | None] = mapped_column(String(KEY))
    device: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    n_images: Mapped[int | None] = mapped_column(Integer)
    n_patients: Mapped[int | None] = mapped_column(Integer)


def _run_fk() -> Any:
    return ForeignKey("cmcl_runs.id", ondelete="CASCADE")


class Edge(Base):
    """``cmcl_edges``: one learned directed edge source -> target of a run."""

    __tablename__ = "cmcl_edges"
    __table_args__ = (
        _one_of("source_kind", VAR_KINDS, "source_kind"),
        _one_of("target_kind", VAR_KINDS, "target_kind"),
        _one_of("direction", DIRECTIONS, "direction"),
        _one_of("orientation", ORIENTATIONS, "orientation"),
        CheckConstraint("stability BETWEEN 0 AND 1", name="stability"),
        CheckConstraint("direction_agreement BETWEEN 0 AND 1", name="direction_agreement"),
    )

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    source: Mapped[str] = mapped_column(String(128), primary_key=True)
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    weight: Mapped[float] = mapped_column(Float)
    source_kind: Mapped[str] = mapped_column(String(16))
    target_kind: Mapped[str] = mapped_column(String(16))
    direction: Mapped[str] = mapped_column(String(16))
    # how the direction was decided; NULL on rows written before the column existed
    orientation: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stability: Mapped[float | None] = mapped_column(Float, nullable=True)
    direction_agreement: Mapped[float | None] = mapped_column(Float, nullable=True)


class Latent(Base):
    """``cmcl_latents``: the posterior mean z of one image under one run."""

    __tablename__ = "cmcl_latents"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    image_key: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(KEY), index=True)
    z: Mapped[list[float]] = mapped_column(FloatVector)
    scored: Mapped[bool] = mapped_column(Boolean, server_default=false())


class RunVariable(Base):
    """``cmcl_run_variables``: the nodes of a run's graph, in adjacency order."""

    __tablename__ = "cmcl_run_variables"
    __table_args__ = (_one_of("kind", VAR_KINDS, "kind"),)

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    var_type: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)


class Artifact(Base):
    """``cmcl_artifacts``: a file a run produced, relative to the run's report folder."""

    __tablename__ = "cmcl_artifacts"

    run_id: Mapped[int] = mapped_column(_run_fk(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    relpath: Mapped[str] = mapped_column(String(512))
    sha256: Mapped[str] = mapped_column(String(KEY))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Image(Base):
    """``cmcl_images``: the catalog, one row per accepted image instance."""

    __tablename__ = "cmcl_images"

    image_key: Mapped[str] = mapped_column(String(KEY), primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(KEY), index=True)
    study_key: Mapped[str | None] = mapped_column(String(KEY))
    series_key: Mapped[str | None] = mapped_column(String(KEY), index=True)
    file_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    content_sha256: Mapped[str] = mapped_column(String(KEY), index=True)
    modality: Mapped[str] = mapped_column(String(16))
    photometric: Mapped[str | None] = mapped_column(String(32))
    rows: Mapped[int | None] = mapped_column(Integer)
    columns: Mapped[int | None] = mapped_column(Integer)
    n_slices: Mapped[int] = mapped_column(Integer, server_default="1")
    transfer_syntax: Mapped[str | None] = mapped_column(String(64))
    cache_key: Mapped[str | None] = mapped_column(String(128))
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Quarantine(Base):
    """``cmcl_quarantine``: one rejected file, with a reason code and a PHI-free detail."""

    __tablename__ = "cmcl_quarantine"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    file_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    content_sha256: Mapped[str | None] = mapped_column(String(KEY), index=True)
    reason: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[str] = mapped_column(Text, server_default="")
    first_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
