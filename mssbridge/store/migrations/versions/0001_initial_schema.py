"""initial schema

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "imap_cursor",
        sa.Column("mailbox", sa.String(length=400), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("mailbox"),
    )
    op.create_table(
        "inbox",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox", sa.String(length=320), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=True),
        sa.Column("portal_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("mailbox", "uidvalidity", "uid"),
    )
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inbox_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_next_at"), ["next_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_portal_id"), ["portal_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_sha256"), ["sha256"], unique=False)
        batch_op.create_index(batch_op.f("ix_inbox_state"), ["state"], unique=False)

    op.create_table(
        "matrix_txn",
        sa.Column("txn_id", sa.String(length=255), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("txn_id"),
    )
    op.create_table(
        "message_map",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("portal_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("message_map", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_map_message_id"), ["message_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_message_map_portal_id"), ["portal_id"], unique=False)

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "outbox",
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=False),
        sa.Column("sender", sa.String(length=255), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_next_at"), ["next_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_room_id"), ["room_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_outbox_state"), ["state"], unique=False)

    op.create_table(
        "portal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_key", sa.String(length=64), nullable=False),
        sa.Column("room_id", sa.String(length=255), nullable=True),
        sa.Column("subject", sa.String(length=998), nullable=False),
        sa.Column("correspondents", sa.String(length=4000), nullable=False),
        sa.Column("root_message_id", sa.String(length=998), nullable=True),
        sa.Column("last_message_id", sa.String(length=998), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("conversation_key"),
        sa.UniqueConstraint("room_id"),
    )


def downgrade() -> None:
    op.drop_table("portal")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_state"))
        batch_op.drop_index(batch_op.f("ix_outbox_room_id"))
        batch_op.drop_index(batch_op.f("ix_outbox_next_at"))

    op.drop_table("outbox")
    op.drop_table("meta")
    with op.batch_alter_table("message_map", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_map_portal_id"))
        batch_op.drop_index(batch_op.f("ix_message_map_message_id"))

    op.drop_table("message_map")
    op.drop_table("matrix_txn")
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_inbox_state"))
        batch_op.drop_index(batch_op.f("ix_inbox_sha256"))
        batch_op.drop_index(batch_op.f("ix_inbox_portal_id"))
        batch_op.drop_index(batch_op.f("ix_inbox_next_at"))
        batch_op.drop_index(batch_op.f("ix_inbox_message_id"))

    op.drop_table("inbox")
    op.drop_table("imap_cursor")
