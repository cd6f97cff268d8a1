"""scheduler: priority, constraints, ports, GPUs, algorithm; user shares; node GPUs; queue settings

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 12:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tasks", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("tasks", sa.Column("constraints", sa.JSON(), nullable=False, server_default="[]"))
    op.add_column(
        "tasks", sa.Column("ports", sa.String(length=512), nullable=False, server_default="")
    )
    op.add_column("tasks", sa.Column("gpus", sa.Integer(), nullable=False, server_default="0"))
    op.add_column(
        "tasks", sa.Column("gpu_indices", sa.String(length=256), nullable=False, server_default="")
    )
    op.add_column(
        "tasks",
        sa.Column("algorithm", sa.String(length=16), nullable=False, server_default="binpack"),
    )
    op.add_column("tasks", sa.Column("pending_detail", sa.JSON(), nullable=True))
    op.create_index(
        "ix_tasks_state_priority", "tasks", ["state", "priority", "created_at"], unique=False
    )
    op.add_column("users", sa.Column("share", sa.Float(), nullable=False, server_default="1"))
    op.add_column(
        "nodes", sa.Column("gpus", sa.String(length=512), nullable=False, server_default="")
    )
    op.create_table(
        "scheduler_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_settings")
    op.drop_column("nodes", "gpus")
    op.drop_column("users", "share")
    op.drop_index("ix_tasks_state_priority", table_name="tasks")
    for column in (
        "pending_detail",
        "algorithm",
        "gpu_indices",
        "gpus",
        "ports",
        "constraints",
        "priority",
    ):
        op.drop_column("tasks", column)
