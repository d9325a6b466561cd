"""``mssbridge purge``: run the retention purge now, or count what it would remove."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from mssbridge.cli_support import ConfigOption, load_settings, operator_id, with_store

if TYPE_CHECKING:
    from mssbridge.store.repo import Store


def purge(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count what is past retention.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Remove what is past retention (config section "retention"): rows, mailbox copies.

    Prints one line per kind with its count. Redacting the ghosts' messages in Matrix is
    the running bridge's part: their map rows are left to it (kind map_in).
    """
    from mssbridge.flows.retention import RetentionFlow, mailbox_opener, policy_of
    from mssbridge.policy.retention import PurgeKind
    from mssbridge.security.tls import client_context

    settings = load_settings(config)

    async def action(store: Store) -> None:
        flow = RetentionFlow(
            store,
            policy_of(settings),
            settings.retention.batch,
            open_mailbox=mailbox_opener(
                settings, lambda: client_context(settings.tls), settings.mailbox_password()
            ),
            actor=operator_id(),
        )
        if dry_run:
            counts = await flow.plan()
            typer.echo("past retention (dry run, nothing removed):")
        else:
            counts = await flow.run_once()
            typer.echo("removed:")
        width = max(len(kind) for kind in PurgeKind) + 1
        for kind in PurgeKind:
            typer.echo(f"  {kind:{width}} {counts.get(kind, 0)}")
        typer.echo(f"  {'total':{width}} {sum(counts.values())}")
        if not dry_run:
            left = await flow.plan()
            waiting = {k: n for k, n in left.items() if n}
            if waiting:
                typer.echo(
                    "still past retention (mailbox unreachable, or Matrix redactions left to "
                    "the running bridge): " + ", ".join(f"{k}={n}" for k, n in waiting.items())
                )

    asyncio.run(with_store(settings, action))
