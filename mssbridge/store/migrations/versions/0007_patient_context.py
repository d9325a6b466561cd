"""Patient context of a portal, sealed (AES-GCM) like every content kept in the store.

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal", schema=None) as batch_op:
        batch_op.add_column(sa.Column("patient", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("portal", schema=None) as batch_op:
        batch_op.drop_column("patient")
