"""tasks: index on (name, created_at) for the API's name-or-id lookup

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 14:45:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # An admin's lookup by name had no usable index (ix_tasks_owner_name leads with
    # the owner): every GET /api/v1/tasks/{name} scanned the table.
    op.create_index("ix_tasks_name_created", "tasks", ["name", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_tasks_name_created", table_name="tasks")
