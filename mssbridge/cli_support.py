"""What every sub-command shares: the --config option, loading settings, the store, the operator."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mssbridge import config as config_module
from mssbridge.errors import ConfigError

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar=config_module.CONFIG_ENV,
        help=f"Config file [default: {config_module.DEFAULT_CONFIG_PATH}].",
        show_default=False,
    ),
]
EXIT_CONFIG = 2


def load_settings(config: Path | None) -> config_module.Settings:
    """The settings, or a clear error and exit status 2."""
    try:
        return config_module.load(config_module.config_path(config))
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG) from exc


async def with_store(
    settings: config_module.Settings, action: Callable[[Store], Awaitable[None]]
) -> None:
    """Open the store (migrated, key checked), run ``action``, close it."""
    from mssbridge.daemon import open_store

    store = await open_store(settings)
    try:
        await action(store)
    finally:
        await store.engine.dispose()


def operator_id() -> str:
    """The person acting from the command line, as the audit trail names them."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = str(os.getuid())
    return f"os:{name}"
