"""Alembic environment: runs migrations on the connection handed over by mssbridge.store.db."""

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlmodel import SQLModel
from sqlmodel.sql.sqltypes import AutoString

import mssbridge.store.tables  # noqa: F401  (registers the tables on the metadata)


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render AutoString as sa.String (same DDL): revisions then need no sqlmodel import."""
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length!r})" if obj.length is not None else "sa.String()"
    return False


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("migrations run through mssbridge.store.db.migrate()")
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    render_item=_render_item,
)
with context.begin_transaction():
    context.run_migrations()
