"""``mssbridge keys``: rotate the at-rest key while the bridge runs, then retire old keys."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from mssbridge.cli_support import EXIT_CONFIG, ConfigOption, load_settings, operator_id, with_store
from mssbridge.errors import ConfigError
from mssbridge.security.atrest import key_id_of, load_keyring, write_keyring

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

keys_app = typer.Typer(help="At-rest encryption keys: status, rotation.", no_args_is_help=True)


def _keyring(path: Path) -> list[bytes]:
    try:
        return load_keyring(path)
    except ConfigError as exc:
        typer.secho(f"keys: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG) from exc


@keys_app.command("status")
def status(config: ConfigOption = None) -> None:
    """List the keys of the key file (newest first) and how many blobs each one seals."""
    from mssbridge.store.rekey import blobs_by_key

    settings = load_settings(config)
    keys = _keyring(settings.bridge.key_file)

    async def action(store: Store) -> None:
        counts = await blobs_by_key(store)
        for index, key in enumerate(keys):
            role = "current" if index == 0 else "previous"
            typer.echo(f"{key_id_of(key).hex()} {role:8} blobs={counts.pop(key_id_of(key), 0)}")
        for key_id, count in counts.items():
            typer.echo(f"{key_id.hex()} UNKNOWN  blobs={count}")

    asyncio.run(with_store(settings, action))


@keys_app.command("rotate")
def rotate(config: ConfigOption = None) -> None:
    """Add a new key and re-seal every stored blob with it, while the bridge keeps running.

    The previous keys stay in the key file (a running bridge may still hold blobs sealed with
    them); `mssbridge keys prune` removes them once nothing uses them.
    """
    from mssbridge.store import audit
    from mssbridge.store.rekey import reseal_all
    from mssbridge.store.tables import AuditAction

    settings = load_settings(config)
    path = settings.bridge.key_file
    keys = _keyring(path)
    new_key = secrets.token_bytes(32)
    # The new file is written first: whatever happens next, it opens every blob.
    write_keyring(path, [new_key, *keys])
    typer.echo(f"new key {key_id_of(new_key).hex()} written to {path}; re-sealing the store")

    async def action(store: Store) -> None:
        report = await reseal_all(store)
        await audit.record(
            store, AuditAction.ADMIN_ACTION, actor=operator_id(), outcome="keys_rotate"
        )
        per_column = ", ".join(f"{k}={v}" for k, v in sorted(report.resealed.items()))
        rate = report.rows / report.seconds if report.seconds else 0.0
        typer.echo(
            f"re-sealed {report.rows} blobs ({per_column or 'none'}) in {report.seconds:.1f} s, "
            f"{rate:.0f} rows/s, {report.passes} passes"
        )

    asyncio.run(with_store(settings, action))


@keys_app.command("prune")
def prune(config: ConfigOption = None) -> None:
    """Remove the previous keys from the key file, once no stored blob needs them."""
    from mssbridge.store.rekey import blobs_by_key

    settings = load_settings(config)
    path = settings.bridge.key_file
    keys = _keyring(path)

    async def action(store: Store) -> None:
        current = key_id_of(keys[0])
        stale = {k: n for k, n in (await blobs_by_key(store)).items() if k != current}
        if stale:
            typer.secho(
                f"keys: {sum(stale.values())} blobs still use a previous key; "
                "run `mssbridge keys rotate` first",
                err=True,
                fg=typer.colors.RED,
            )
            raise typer.Exit(1)
        write_keyring(path, keys[:1])
        typer.echo(f"{len(keys) - 1} previous key(s) removed; {current.hex()} remains")

    asyncio.run(with_store(settings, action))
