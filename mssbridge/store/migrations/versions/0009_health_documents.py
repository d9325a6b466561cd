"""Health documents built by the bridge: id, set, version, what they replace (no content).

Revision ID: 0009
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "health_document",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("portal_id", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("set_root", sa.String(length=64), nullable=False),
        sa.Column("document_root", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("replaces_root", sa.String(length=64), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("origin"),
        sa.UniqueConstraint("document_root"),
        sa.UniqueConstraint("set_root", "version"),
    )
    with op.batch_alter_table("health_document", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_health_document_portal_id"), ["portal_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("health_document", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_health_document_portal_id"))
    op.drop_table("health_document")
