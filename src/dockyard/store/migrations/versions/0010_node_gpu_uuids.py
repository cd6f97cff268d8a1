"""node GPU UUIDs (index -> UUID, as the agent reported them)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 05:45:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("gpu_uuids", sa.JSON(), nullable=False, server_default="{}"))


def downgrade() -> None:
    op.drop_column("nodes", "gpu_uuids")
