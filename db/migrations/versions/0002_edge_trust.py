"""Edges say how far they can be trusted: orientation, stability, direction agreement.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29

``cmcl_edges`` gains three nullable columns: ``orientation`` (``knowledge`` | ``data`` |
``undetermined``), ``stability`` and ``direction_agreement`` (fractions in [0, 1] of resampled
fits). Rows written before stay as they were, with NULL in the new columns. Self-contained (no
import of db.models), as every migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # SQLite copies the table (rows kept); op.f: the names are final, not naming-convention input
    with op.batch_alter_table("cmcl_edges") as batch:
        batch.add_column(sa.Column("orientation", sa.String(16), nullable=True))
        batch.add_column(sa.Column("stability", sa.Float(), nullable=True))
        batch.add_column(sa.Column("direction_agreement", sa.Float(), nullable=True))
        batch.create_check_constraint(
            op.f("ck_cmcl_edges_orientation"),
            "orientation IN ('knowledge', 'data', 'undetermined')",
        )
        batch.create_check_constraint(op.f("ck_cmcl_edges_stability"), "stability BETWEEN 0 AND 1")
        batch.create_check_constraint(
            op.f("ck_cmcl_edges_direction_agreement"), "direction_agreement BETWEEN 0 AND 1"
        )


def downgrade() -> None:
    with op.batch_alter_table("cmcl_edges") as batch:
        batch.drop_constraint(op.f("ck_cmcl_edges_direction_agreement"), type_="check")
        batch.drop_constraint(op.f("ck_cmcl_edges_stability"), type_="check")
        batch.drop_constraint(op.f("ck_cmcl_edges_orientation"), type_="check")
        batch.drop_column("direction_agreement")
        batch.drop_column("stability")
        batch.drop_column("orientation")
