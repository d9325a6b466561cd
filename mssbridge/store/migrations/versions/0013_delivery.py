"""Gateway mode, outbound: the per-domain delivery queue.

Revision ID: 0013
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("outbox_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.String(length=320), nullable=False),
        sa.Column("recipients", sa.Text(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("attempt_started_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("outbox_id", "domain"),
    )
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        for column in ("state", "next_at", "outbox_id", "room_id", "domain"):
            batch_op.create_index(batch_op.f(f"ix_delivery_{column}"), [column], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delivery", schema=None) as batch_op:
        for column in ("state", "next_at", "outbox_id", "room_id", "domain"):
            batch_op.drop_index(batch_op.f(f"ix_delivery_{column}"))
    op.drop_table("delivery")
