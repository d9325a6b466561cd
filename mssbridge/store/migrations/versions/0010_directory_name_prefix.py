"""Family-name prefix searches of the directory served by an index on PostgreSQL too.

A B-tree under a linguistic collation (fr_FR, en_US…) cannot serve a prefix range, so
PostgreSQL gets an index of ``name_key`` in byte order ("C"), which ``DirectoryRepo.search``
compares in. SQLite compares in byte order already and uses ``ix_directory_entry_name_key``.

Revision ID: 0010
Revises: 0007
Depends on: 0006 (the directory table)
"""

from alembic import op

revision = "0010"
down_revision = "0007"
branch_labels = None
depends_on = "0006"

INDEX = "ix_directory_entry_name_key_c"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f'CREATE INDEX {INDEX} ON directory_entry (name_key COLLATE "C")')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {INDEX}")
