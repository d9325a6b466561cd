"""Append-only audit trail; the DKIM verdict of each inbound mail.

Revision ID: 0004
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=True),
        sa.Column("queue", sa.String(length=8), nullable=True),
        sa.Column("row_id", sa.Integer(), nullable=True),
        sa.Column("portal_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=320), nullable=True),
        sa.Column("peer", sa.String(length=1000), nullable=True),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("outcome", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_at"), ["at"], unique=False)
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("auth_results", sa.String(length=1000), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_column("auth_results")
    with op.batch_alter_table("audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_at"))
    op.drop_table("audit")
