"""The ``mssbridge`` command line (Typer): set-up, running, checks and queue inspection."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mssbridge import __version__
from mssbridge import config as config_module
from mssbridge.cli_audit import audit_app
from mssbridge.cli_cda import cda_app
from mssbridge.cli_certs import certs_app
from mssbridge.cli_directory import directory_app
from mssbridge.cli_dkim import dkim_app
from mssbridge.cli_keys import keys_app
from mssbridge.cli_purge import purge
from mssbridge.cli_support import (
    EXIT_CONFIG,
    ConfigOption,
    load_settings,
    operator_id,
    with_store,
)
from mssbridge.cli_whitelist import whitelist_app
from mssbridge.errors import ConfigError

if TYPE_CHECKING:
    from mssbridge.store.repo import Store
    from mssbridge.store.tables import Delivery, Inbox, Outbox

app = typer.Typer(
    name="mssbridge",
    help="Secure bridge between Matrix health messaging and an MSSanté mailbox.",
    no_args_is_help=True,
    add_completion=False,
)
queue_app = typer.Typer(
    help="Inspect and act on the inbox, outbox and gateway delivery queues.",
    no_args_is_help=True,
)
app.add_typer(queue_app, name="queue")
app.add_typer(certs_app, name="certs")
app.add_typer(whitelist_app, name="whitelist")
app.add_typer(directory_app, name="directory")
app.add_typer(audit_app, name="audit")
app.add_typer(cda_app, name="cda")
app.add_typer(dkim_app, name="dkim")
app.add_typer(keys_app, name="keys")
app.command("purge")(purge)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command()
def init(
    config: ConfigOption = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="section.key=value to fill in, e.g. matrix.server_name=x"),
    ] = None,
) -> None:
    """Write a new commented config with fresh appservice tokens and an at-rest key file."""
    from mssbridge.provisioning import write_new_config

    path = config_module.config_path(config)
    try:
        key_path = write_new_config(path, set_ or [])
    except ConfigError as exc:
        typer.secho(f"init: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG) from exc
    typer.echo(f"wrote {path} (mode 600) and the at-rest key {key_path}")
    typer.echo("next: fill in the CHANGE_ME values, then `mssbridge registration` and `check`")


@app.command()
def registration(config: ConfigOption = None) -> None:
    """Print the appservice registration YAML for the homeserver."""
    from mssbridge.provisioning import registration_yaml

    typer.echo(registration_yaml(load_settings(config)), nl=False)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the bridge in the foreground until SIGTERM or SIGINT."""
    from mssbridge import logs
    from mssbridge.allocator import return_large_blocks
    from mssbridge.daemon import Daemon

    return_large_blocks()  # large mails' copies must not stay resident once freed
    settings = load_settings(config)
    logs.setup(settings.bridge.log_level)
    daemon = Daemon(settings)

    async def main() -> None:
        daemon.install_signal_handlers()
        await daemon.run()

    try:
        asyncio.run(main())
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG) from exc


@app.command()
def check(config: ConfigOption = None) -> None:
    """Check the config, keys, certificates, database, homeserver and both mail servers."""
    from mssbridge.checks import run_checks

    settings = load_settings(config)
    typer.echo(f"ok    config {settings.source}")
    results = asyncio.run(run_checks(settings))
    for result in results:
        colour = typer.colors.GREEN if result.ok else typer.colors.RED
        typer.secho(f"{'ok' if result.ok else 'FAIL':5} {result.name}: {result.detail}", fg=colour)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Scratch directory for the lab (wiped first).")
    ] = Path("demo-state"),
) -> None:
    """Run the relay on loopback with a test PKI, Postfix, Dovecot and Synapse, narrated."""
    from mssbridge.lab.demo import run_demo

    run_demo(directory.resolve(), say=typer.echo)


QueueName = Annotated[str, typer.Argument(help="inbox, outbox or delivery (gateway mode)")]
QueueTable = type["Inbox"] | type["Outbox"] | type["Delivery"]


def _queue_table(name: str) -> QueueTable:
    from mssbridge.store.tables import Delivery, Inbox, Outbox

    tables: dict[str, QueueTable] = {"inbox": Inbox, "outbox": Outbox, "delivery": Delivery}
    if name not in tables:
        typer.secho("queue must be 'inbox', 'outbox' or 'delivery'", err=True, fg=typer.colors.RED)
        raise typer.Exit(2)
    return tables[name]


async def _act_on_delivery(store: Store, row_id: int, verb: str) -> None:
    """``queue retry`` or ``queue drop`` of a gateway delivery: open rows only."""
    from mssbridge.store.delivery_repo import DeliveryRepo

    repo = DeliveryRepo(store)
    act = repo.retry_now if verb == "retry" else repo.drop
    refused = await act(row_id, actor=operator_id())
    if refused is not None:
        typer.secho(f"delivery item {row_id}: {refused.value}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.echo(f"delivery item {row_id} {'queued again' if verb == 'retry' else 'dropped'}")


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


@queue_app.command("list")
def queue_list(
    config: ConfigOption = None,
    state: Annotated[
        list[str] | None, typer.Option(help="States to list (default: all but done)")
    ] = None,
) -> None:
    """List queued items (outbox, inbox, gateway deliveries): metadata only, never content."""
    settings = load_settings(config)
    states = state or ["pending", "retry", "rejected", "shunted"]

    async def action(store: Store) -> None:
        from mssbridge.store.tables import Delivery, Inbox, Outbox

        tables: list[tuple[str, Any]] = [("outbox", Outbox), ("inbox", Inbox)]
        if settings.gateway.enabled and settings.gateway.outbound != "mailbox":
            tables.append(("delivery", Delivery))  # gateway mode: one row per domain
        for name, table in tables:
            counts = await store.counts(table)
            summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.by_state.items())) or "empty"
            typer.echo(f"{name}: {summary}")
            for row in await store.rows(table, states):
                typer.echo(
                    f"  {name} {row.id:>6} {row.state:8} attempts={row.attempts} "
                    f"created={_when(row.created_at)} next={_when(row.next_at)} "
                    f"error={row.last_error or '-'}"
                )

    asyncio.run(with_store(settings, action))


@queue_app.command("show")
def queue_show(queue: QueueName, row_id: int, config: ConfigOption = None) -> None:
    """Show one item's metadata (ids, state, error), never its content."""
    settings = load_settings(config)
    table = _queue_table(queue)

    async def action(store: Store) -> None:
        row = await store.get(table, row_id)
        if row is None:
            typer.secho(f"no {queue} item {row_id}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        hidden = {"payload", "raw"}
        for key, value in row.model_dump().items():
            if key in hidden:
                if queue == "delivery":  # whether its sealed mail is still kept
                    typer.echo(f"{'mail':16} {'kept (sealed)' if value else 'none'}")
                continue
            if key.endswith("_at") or key == "lease_until":
                value = _when(value)
            typer.echo(f"{key:16} {value}")

    asyncio.run(with_store(settings, action))


@queue_app.command("retry")
def queue_retry(queue: QueueName, row_id: int, config: ConfigOption = None) -> None:
    """Put a rejected or shunted item back in the queue; a delivery still queued: due now."""

    settings = load_settings(config)
    table = _queue_table(queue)

    async def action(store: Store) -> None:
        if queue == "delivery":
            return await _act_on_delivery(store, row_id, "retry")
        if not await store.requeue(table, row_id, actor=operator_id()):
            typer.secho(f"no {queue} item {row_id}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        typer.echo(f"{queue} item {row_id} queued again")

    asyncio.run(with_store(settings, action))


@queue_app.command("drop")
def queue_drop(queue: QueueName, row_id: int, config: ConfigOption = None) -> None:
    """Give up an item for good (it stays listed as dropped)."""
    from mssbridge.store.tables import AuditAction, RowState

    settings = load_settings(config)
    table = _queue_table(queue)

    async def action(store: Store) -> None:
        if queue == "delivery":
            return await _act_on_delivery(store, row_id, "drop")
        if await store.get(table, row_id) is None:
            typer.secho(f"no {queue} item {row_id}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1)
        await store.finish(
            table,
            row_id,
            RowState.DROPPED,
            "dropped by an operator",
            audit_action=AuditAction.ADMIN_ACTION,
            actor=operator_id(),
            outcome="queue_drop",
        )
        typer.echo(f"{queue} item {row_id} dropped")

    asyncio.run(with_store(settings, action))
