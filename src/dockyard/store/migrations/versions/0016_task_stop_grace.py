"""tasks: stop_grace_s (``dockyard stop --time N``: this stop's grace, not the job's)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04 05:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("stop_grace_s", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("stop_grace_s")
