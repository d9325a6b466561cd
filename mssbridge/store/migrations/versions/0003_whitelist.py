"""The MSSanté whitelist in force (domains and operator DNs) and the record of its imports.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "whitelist_domain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(length=255), nullable=False),
        sa.Column("operator_dn", sa.String(length=1024), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("whitelist_domain", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_whitelist_domain_domain"), ["domain"], unique=False)
    op.create_table(
        "whitelist_import",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generated_at", sa.Float(), nullable=False),
        sa.Column("imported_at", sa.Float(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signer_subject", sa.String(length=1024), nullable=False),
        sa.Column("signer_issuer", sa.String(length=1024), nullable=False),
        sa.Column("signer_not_before", sa.Float(), nullable=False),
        sa.Column("signer_not_after", sa.Float(), nullable=False),
        sa.Column("anchored", sa.Boolean(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("domains", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("whitelist_import")
    with op.batch_alter_table("whitelist_domain", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_whitelist_domain_domain"))
    op.drop_table("whitelist_domain")
