"""Initial schema: runs, edges, latents, run variables, artifacts, image catalog, quarantine.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Self-contained on purpose (no import of db.models): a migration must keep describing the
schema of its time after the models move on. ``UTCDateTime`` is stored as
``DateTime(timezone=True)``; the JSON/array variants match db.models.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
FloatVector = sa.JSON().with_variant(postgresql.ARRAY(sa.Float()), "postgresql")
TS = sa.DateTime(timezone=True)


def _run_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["run_id"], ["cmcl_runs.id"], name=f"fk_{table}_run_id_cmcl_runs", ondelete="CASCADE"
    )


def upgrade() -> None:
    op.create_table(
        "cmcl_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("config", JSONDoc, nullable=False),
        sa.Column("metrics", JSONDoc, nullable=True),
        sa.Column("code_version", sa.String(128), nullable=False),
        sa.Column("data_fingerprint", sa.String(64), nullable=True),
        sa.Column("device", sa.String(64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("n_images", sa.Integer(), nullable=True),
        sa.Column("n_patients", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'crashed')", name="ck_cmcl_runs_status"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_cmcl_runs"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_cmcl_runs_status_id", "cmcl_runs", ["status", "id"])

    op.create_table(
        "cmcl_edges",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(128), nullable=False),
        sa.Column("target", sa.String(128), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("source_kind", sa.String(16), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.CheckConstraint(
            "source_kind IN ('clinical', 'latent')", name="ck_cmcl_edges_source_kind"
        ),
        sa.CheckConstraint(
            "target_kind IN ('clinical', 'latent')", name="ck_cmcl_edges_target_kind"
        ),
        sa.CheckConstraint(
            "direction IN ('causal', 'anti_causal', 'other')", name="ck_cmcl_edges_direction"
        ),
        _run_fk("cmcl_edges"),
        sa.PrimaryKeyConstraint("run_id", "source", "target", name="pk_cmcl_edges"),
    )

    op.create_table(
        "cmcl_latents",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("image_key", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("z", FloatVector, nullable=False),
        sa.Column("scored", sa.Boolean(), server_default=sa.false(), nullable=False),
        _run_fk("cmcl_latents"),
        sa.PrimaryKeyConstraint("run_id", "image_key", name="pk_cmcl_latents"),
    )
    op.create_index("ix_cmcl_latents_patient_key", "cmcl_latents", ["patient_key"])

    op.create_table(
        "cmcl_run_variables",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("var_type", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.CheckConstraint("kind IN ('clinical', 'latent')", name="ck_cmcl_run_variables_kind"),
        _run_fk("cmcl_run_variables"),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_cmcl_run_variables"),
    )

    op.create_table(
        "cmcl_artifacts",
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("relpath", sa.String(512), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        _run_fk("cmcl_artifacts"),
        sa.PrimaryKeyConstraint("run_id", "name", name="pk_cmcl_artifacts"),
    )

    op.create_table(
        "cmcl_images",
        sa.Column("image_key", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(64), nullable=False),
        sa.Column("study_key", sa.String(64), nullable=True),
        sa.Column("series_key", sa.String(64), nullable=True),
        sa.Column("file_key", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("photometric", sa.String(32), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("n_slices", sa.Integer(), server_default="1", nullable=False),
        sa.Column("transfer_syntax", sa.String(64), nullable=True),
        sa.Column("cache_key", sa.String(128), nullable=True),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("image_key", name="pk_cmcl_images"),
        sa.UniqueConstraint("file_key", name="uq_cmcl_images_file_key"),
    )
    op.create_index("ix_cmcl_images_patient_key", "cmcl_images", ["patient_key"])
    op.create_index("ix_cmcl_images_series_key", "cmcl_images", ["series_key"])
    op.create_index("ix_cmcl_images_content_sha256", "cmcl_images", ["content_sha256"])

    op.create_table(
        "cmcl_quarantine",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("file_key", sa.String(64), nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=True),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("first_seen_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cmcl_quarantine"),
        sa.UniqueConstraint("file_key", name="uq_cmcl_quarantine_file_key"),
    )
    op.create_index("ix_cmcl_quarantine_reason", "cmcl_quarantine", ["reason"])
    op.create_index("ix_cmcl_quarantine_content_sha256", "cmcl_quarantine", ["content_sha256"])


def downgrade() -> None:
    op.drop_table("cmcl_quarantine")
    op.drop_table("cmcl_images")
    op.drop_table("cmcl_artifacts")
    op.drop_table("cmcl_run_variables")
    op.drop_table("cmcl_latents")
    op.drop_table("cmcl_edges")
    op.drop_table("cmcl_runs")
