"""node joining: join tokens (hashed) and the CURVE public key each admitted node joined with

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 13:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("token_hash", sa.String(length=64), nullable=False, unique=True),
        sa.Column("description", sa.String(length=255), nullable=False, server_default=""),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_table(
        "node_keys",
        sa.Column("node_id", sa.String(length=64), primary_key=True),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("join_token_id", sa.String(length=32), nullable=True),
        sa.Column("joined_at", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("node_keys")
    op.drop_table("join_tokens")
