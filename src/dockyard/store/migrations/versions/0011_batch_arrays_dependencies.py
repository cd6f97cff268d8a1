"""batch computing: job arrays (stored compactly), dependencies, gang columns

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 14:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_arrays",
        sa.Column("workload_id", sa.String(32), sa.ForeignKey("workloads.id"), primary_key=True),
        sa.Column("owner_id", sa.String(32), nullable=False, index=True),
        sa.Column("indices", sa.Text(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("released", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("throttle", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("reason", sa.String(64), nullable=False, server_default=""),
        sa.Column("message", sa.Text(), nullable=False, server_default=""),
        sa.Column("created_at", sa.Float(), nullable=False),
    )
    op.create_table(
        "job_dependencies",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("workload_id", sa.String(32), nullable=False, index=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("on_workload_id", sa.String(32), nullable=False, index=True),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("gang_size", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("gang_nodes", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("accounting") as batch:
        batch.add_column(sa.Column("array_index", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounting") as batch:
        batch.drop_column("array_index")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("gang_nodes")
        batch.drop_column("gang_size")
        batch.drop_column("held")
        batch.drop_column("array_index")
    op.drop_table("job_dependencies")
    op.drop_table("job_arrays")
