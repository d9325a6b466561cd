"""The CLI of the trust features: audit export, key rotation and pruning, DKIM keys."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from fixtures.settings import offline_config
from typer.testing import CliRunner

from mssbridge import config
from mssbridge.cli import app
from mssbridge.daemon import open_store
from mssbridge.security.atrest import load_keyring
from mssbridge.store.tables import Outbox

pytestmark = pytest.mark.integration


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    offline_config(
        path,
        "matrix.server_name=hospital.test",
        "mailbox.address=bal@hopital.mssante.fr",
    )
    return path


def _seed(path: Path) -> None:
    async def main() -> None:
        store = await open_store(config.load(path))
        event = {
            "event_id": "$1",
            "room_id": "!r:h",
            "sender": "@a:h",
            "type": "m.room.message",
            "content": {"body": "DUPONT"},
        }
        await store.store_transaction("t", [event])
        await store.store_mail("bal/INBOX", 1, 1, b"Subject: DUPONT\r\n\r\nx\r\n", "<1@x>")
        await store.engine.dispose()

    asyncio.run(main())


def test_queue_actions_and_export(config_path: Path) -> None:
    _seed(config_path)
    runner = CliRunner()
    c = ["--config", str(config_path)]
    assert runner.invoke(app, ["queue", "drop", "outbox", "1", *c]).exit_code == 0
    assert runner.invoke(app, ["queue", "retry", "outbox", "1", *c]).exit_code == 0
    result = runner.invoke(app, ["audit", "export", "--since", "2000-01-01", *c])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["action"], r["outcome"]) for r in rows] == [
        ("message_received", "pending"),
        ("admin_action", "queue_drop"),
        ("admin_action", "queue_retry"),
    ]
    assert rows[1]["actor"].startswith("os:") and rows[1]["time"].startswith("20")
    assert "DUPONT" not in result.output
    jsonl = runner.invoke(
        app, ["audit", "export", "--since", "2000-01-01", "--format", "jsonl", *c]
    )
    actions = [json.loads(line)["action"] for line in jsonl.output.splitlines()]
    assert actions == ["message_received", "admin_action", "admin_action"]
    empty = runner.invoke(
        app, ["audit", "export", "--since", "2000-01-01", "--until", "2000-01-02", *c]
    )
    assert empty.output.splitlines() == [
        "time,action,direction,queue,row_id,portal_id,actor,peer,message_id,outcome"
    ]
    bad = runner.invoke(app, ["audit", "export", "--since", "yesterday", *c])
    assert bad.exit_code == 2


def test_rotate_then_prune(config_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mssbridge.security.atrest import Sealer

    monkeypatch.setattr(Sealer, "RELOAD_SECONDS", 0.0)
    _seed(config_path)
    settings = config.load(config_path)
    runner = CliRunner()
    c = ["--config", str(config_path)]
    before = load_keyring(settings.bridge.key_file)
    rotated = runner.invoke(app, ["keys", "rotate", *c])
    assert rotated.exit_code == 0, rotated.output
    assert "re-sealed 3 blobs" in rotated.output
    after = load_keyring(settings.bridge.key_file)
    assert after[1:] == before and len(after) == 2
    status = runner.invoke(app, ["keys", "status", *c])
    assert "current  blobs=3" in status.output and "previous blobs=0" in status.output
    assert runner.invoke(app, ["keys", "prune", *c]).exit_code == 0
    assert load_keyring(settings.bridge.key_file) == after[:1]

    async def read_back() -> str:
        store = await open_store(settings)
        (row,) = await store.rows(Outbox, ["pending"])
        body = str(store.event_of(row)["content"]["body"])
        await store.engine.dispose()
        return body

    assert asyncio.run(read_back()) == "DUPONT"
    export = runner.invoke(app, ["audit", "export", "--since", "2000-01-01", *c])
    assert "keys_rotate" in export.output


def test_missing_key_file_is_a_clear_error(config_path: Path) -> None:
    config.load(config_path).bridge.key_file.unlink()
    result = CliRunner().invoke(app, ["keys", "rotate", "--config", str(config_path)])
    assert result.exit_code == 2 and "key file not found" in result.output


def test_dkim_keygen(tmp_path: Path, config_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "dkim",
            "keygen",
            "--selector",
            "s1",
            "--out",
            str(tmp_path / "k"),
            "--config",
            str(config_path),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "s1._domainkey.hopital.mssante.fr. IN TXT" in result.output
    assert "v=DKIM1; k=rsa; p=" in result.output
    assert (tmp_path / "k" / "s1.private").stat().st_mode & 0o077 == 0
