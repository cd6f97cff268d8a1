"""usage history: downsampled CPU and memory per task and per node

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 14:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_history",
        sa.Column("subject", sa.String(8), primary_key=True),
        sa.Column("subject_id", sa.String(64), primary_key=True),
        sa.Column("res", sa.Integer(), primary_key=True),
        sa.Column("bucket", sa.BigInteger(), primary_key=True),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("cpu_s", sa.Float(), nullable=False),
        sa.Column("memory_gib_s", sa.Float(), nullable=False),
        sa.Column("max_memory_bytes", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_usage_history_res_bucket", "usage_history", ["res", "bucket"])


def downgrade() -> None:
    op.drop_index("ix_usage_history_res_bucket", table_name="usage_history")
    op.drop_table("usage_history")
