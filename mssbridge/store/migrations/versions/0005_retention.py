"""Retention: merge the two heads and index the time columns the purge selects on.

Revision ID: 0005
Revises: 0003, 0004
"""

from alembic import op

revision = "0005"
down_revision = ("0003", "0004")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index("ix_outbox_state_updated_at", ["state", "updated_at"], unique=False)
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_state_updated_at", ["state", "updated_at"], unique=False)
    with op.batch_alter_table("message_map", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_message_map_created_at"), ["created_at"], unique=False)
    with op.batch_alter_table("matrix_txn", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_matrix_txn_received_at"), ["received_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("matrix_txn", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_matrix_txn_received_at"))
    with op.batch_alter_table("message_map", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_message_map_created_at"))
    with op.batch_alter_table("inbox", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_state_updated_at")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_state_updated_at")
