"""services: versions, rollouts, replica health and port maps, templates

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workloads") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("previous_spec", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("rollout", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("template", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("expires_at", sa.Float(), nullable=True))
        batch.create_index("ix_workloads_kind_name", ["kind", "name"])
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("health", sa.String(16), nullable=False, server_default=""))
        batch.add_column(sa.Column("health_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("port_map", sa.JSON(), nullable=False, server_default="[]"))
    op.create_table(
        "templates",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("lifetime_s", sa.Float(), nullable=False),
        sa.Column("max_per_user", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("templates")
    with op.batch_alter_table("tasks") as batch:
        for name in ("port_map", "health_at", "health", "version"):
            batch.drop_column(name)
    with op.batch_alter_table("workloads") as batch:
        batch.drop_index("ix_workloads_kind_name")
        for name in ("expires_at", "template", "deleted_at", "rollout", "previous_spec", "version"):
            batch.drop_column(name)
