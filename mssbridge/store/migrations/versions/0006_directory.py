"""The MSSanté directory extraction: one row per mailbox, indexed for searches.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_INDEXED = ("address", "pp_id", "national_id", "name_key", "profession_code", "city_key")


def upgrade() -> None:
    op.create_table(
        "directory_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_type", sa.String(length=8), nullable=False),
        sa.Column("address", sa.String(), nullable=False),
        sa.Column("id_type", sa.String(), nullable=False),
        sa.Column("pp_id", sa.String(), nullable=False),
        sa.Column("national_id", sa.String(), nullable=False),
        sa.Column("structure_id", sa.String(), nullable=False),
        sa.Column("service", sa.String(), nullable=False),
        sa.Column("civility", sa.String(), nullable=False),
        sa.Column("family_name", sa.String(), nullable=False),
        sa.Column("given_name", sa.String(), nullable=False),
        sa.Column("name_key", sa.String(), nullable=False),
        sa.Column("profession_code", sa.String(), nullable=False),
        sa.Column("profession_label", sa.String(), nullable=False),
        sa.Column("know_how_label", sa.String(), nullable=False),
        sa.Column("structure_name", sa.String(), nullable=False),
        sa.Column("city", sa.String(), nullable=False),
        sa.Column("city_key", sa.String(), nullable=False),
        sa.Column("postal_code", sa.String(), nullable=False),
        sa.Column("department", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("directory_entry", schema=None) as batch_op:
        for name in _INDEXED:
            batch_op.create_index(batch_op.f(f"ix_directory_entry_{name}"), [name], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("directory_entry", schema=None) as batch_op:
        for name in _INDEXED:
            batch_op.drop_index(batch_op.f(f"ix_directory_entry_{name}"))
    op.drop_table("directory_entry")
