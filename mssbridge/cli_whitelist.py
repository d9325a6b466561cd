"""``mssbridge whitelist``: import the signed MSSanté whitelist, show it, check an address."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mssbridge import config as config_module
from mssbridge.cli_support import ConfigOption, load_settings, with_store

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

whitelist_app = typer.Typer(
    help="The MSSanté whitelist: the domains mail may be sent to.", no_args_is_help=True
)

EXIT_REFUSED = 1


def _run(settings: config_module.Settings, action: Callable[[Store], Awaitable[None]]) -> None:
    asyncio.run(with_store(settings, action))


def _day(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _fail(message: str) -> typer.Exit:
    typer.secho(message, err=True, fg=typer.colors.RED)
    return typer.Exit(EXIT_REFUSED)


@whitelist_app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="listeblanchemssante.xml as published by the ANS")],
    config: ConfigOption = None,
    accept_expired_signer: Annotated[
        bool,
        typer.Option(
            "--accept-expired-signer",
            help="Import a list generated outside its signer's validity (an explicit decision).",
        ),
    ] = False,
) -> None:
    """Verify the file's signature, then put its list in force (the old one stays on failure)."""
    from mssbridge.directory.whitelist import WhitelistError, read_whitelist
    from mssbridge.store.whitelist_repo import WhitelistRepo

    settings = load_settings(config)
    started = time.monotonic()
    try:
        whitelist = read_whitelist(
            file,
            ca_file=settings.whitelist.ca_file,
            accept_expired_signer=accept_expired_signer,
        )
    except WhitelistError as exc:
        raise _fail(f"whitelist refused, nothing imported: {exc}") from exc
    signer = whitelist.signer
    typer.echo(f"signature  valid ({whitelist.trust})")
    typer.echo(f"signer     {signer.subject}")
    typer.echo(f"issuer     {signer.issuer}")
    typer.echo(f"validity   {signer.not_before:%Y-%m-%d} to {signer.not_after:%Y-%m-%d}")
    typer.echo(f"generated  {whitelist.generated_at:%Y-%m-%d %H:%M:%SZ}")
    for warning in whitelist.warnings:
        typer.secho(f"WARNING    {warning}", fg=typer.colors.YELLOW)

    async def action(store: Store) -> None:
        repo = WhitelistRepo(store)
        previous = await repo.current()
        if previous is not None and previous.generated_at > whitelist.generated_at.timestamp():
            typer.secho(
                f"WARNING    older than the list it replaces (generated "
                f"{_day(previous.generated_at)})",
                fg=typer.colors.YELLOW,
            )
        await repo.replace(whitelist, source=str(file.resolve()))

    _run(settings, action)
    typer.echo(
        f"imported   {len(whitelist.entries)} entries ({whitelist.source_entries} in the file), "
        f"{len(whitelist.domains)} domains, {len(whitelist.operator_dns)} operator DNs "
        f"in {time.monotonic() - started:.1f} s"
    )


@whitelist_app.command("show")
def show(config: ConfigOption = None) -> None:
    """The list in force: generation date, age, signer and counts."""
    from mssbridge.store.whitelist_repo import WhitelistRepo

    settings = load_settings(config)

    async def action(store: Store) -> None:
        repo = WhitelistRepo(store)
        current = await repo.current()
        if current is None:
            raise _fail("no whitelist imported yet: run `mssbridge whitelist import FILE`")
        entries, domains, dns = await repo.counts()
        age = (time.time() - current.generated_at) / 86400
        trust = "chained to whitelist.ca_file" if current.anchored else "not chained to an anchor"
        typer.echo(f"generated  {_day(current.generated_at)} ({age:.0f} days ago)")
        typer.echo(f"imported   {_day(current.imported_at)} from {current.source or '-'}")
        typer.echo(f"signer     {current.signer_subject} ({trust})")
        typer.echo(f"issuer     {current.signer_issuer}")
        typer.echo(
            f"validity   {_day(current.signer_not_before)} to {_day(current.signer_not_after)}"
        )
        typer.echo(f"sha256     {current.sha256}")
        typer.echo(f"counts     {entries} entries, {domains} domains, {dns} operator DNs")
        if age > settings.whitelist.max_age_days:
            typer.secho(
                f"WARNING    older than whitelist.max_age_days ({settings.whitelist.max_age_days})",
                fg=typer.colors.YELLOW,
            )

    _run(settings, action)


@whitelist_app.command("check")
def check(
    target: Annotated[str, typer.Argument(help="A domain or an address")],
    config: ConfigOption = None,
) -> None:
    """Whether mail to an address (or a domain) may leave, with its operators' DNs."""
    from mssbridge.flows.whitelist_gate import why_refused
    from mssbridge.policy.whitelist import domain_of
    from mssbridge.store.whitelist_repo import WhitelistRepo

    settings = load_settings(config)
    domain = domain_of(target)

    async def action(store: Store) -> None:
        entries = await WhitelistRepo(store).entries(domain)
        if entries:
            typer.echo(f"{domain}: listed ({len(entries)} operator certificate DN(s))")
            for entry in entries:
                typer.echo(f"  {entry.operator_dn}  [{entry.description}]")
        else:
            typer.echo(f"{domain}: not listed")
        reason = await why_refused(store, settings, target)
        if reason is not None:
            raise _fail(f"mail to {target} is refused: {reason}")
        typer.echo(f"mail to {target} may leave")

    _run(settings, action)
