"""The database fixture gives a working empty database on SQLite and on PostgreSQL."""

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

pytestmark = pytest.mark.integration


async def test_database_url_answers_select_1(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert (await connection.execute(text("select 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
