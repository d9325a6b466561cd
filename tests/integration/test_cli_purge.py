"""``mssbridge purge [--dry-run]`` against a real store: counts per kind, then removal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fixtures.settings import offline_config
from sqlalchemy import text
from typer.testing import CliRunner

from mssbridge import config
from mssbridge.cli import app
from mssbridge.daemon import open_store
from mssbridge.store.tables import Outbox, RowState

pytestmark = pytest.mark.integration


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    offline_config(
        path,
        "matrix.server_name=hospital.test",
        "mailbox.address=bal@hopital.mssante.fr",
        "retention.content_days=1",
    )
    return path


def _seed_two_days_ago(path: Path) -> None:
    async def main() -> None:
        store = await open_store(config.load(path))
        events = [
            {
                "event_id": f"${n}",
                "room_id": f"!r{n}:h",
                "sender": "@a:h",
                "type": "m.room.message",
                "content": {"body": "DUPONT"},
            }
            for n in (1, 2, 3)
        ]
        await store.store_transaction("t", events)
        await store.finish(Outbox, 1, RowState.DONE)
        await store.finish(Outbox, 2, RowState.DROPPED)  # 3 stays pending: never purged
        async with store.engine.begin() as conn:
            await conn.execute(text("UPDATE outbox SET updated_at = updated_at - 2 * 86400"))
        await store.engine.dispose()

    asyncio.run(main())


def _lines(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            found[parts[0]] = int(parts[1])
    return found


def test_dry_run_counts_then_purge_removes(config_path: Path) -> None:
    _seed_two_days_ago(config_path)
    runner = CliRunner()
    c = ["--config", str(config_path)]
    dry = runner.invoke(app, ["purge", "--dry-run", *c])
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.output
    assert _lines(dry.output)["outbox"] == 2 and _lines(dry.output)["total"] == 2
    assert _lines(dry.output)["delivery"] == _lines(dry.output)["delivery_rejected"] == 0
    assert runner.invoke(app, ["purge", "--dry-run", *c]).output == dry.output  # nothing went
    done = runner.invoke(app, ["purge", *c])
    assert done.exit_code == 0, done.output
    assert _lines(done.output)["outbox"] == 2 and "still past retention" not in done.output
    export = runner.invoke(app, ["audit", "export", "--since", "2000-01-01", *c])
    purged = [line for line in export.output.splitlines() if ",purged," in line]
    assert len(purged) == 1 and "outbox=2" in purged[0] and ",os:" in purged[0]
    assert "DUPONT" not in done.output + export.output
    again = runner.invoke(app, ["purge", "--dry-run", *c])
    assert _lines(again.output)["total"] == 0
