"""``mssbridge dkim keygen``: a DKIM key pair for the bridge and the DNS record to publish."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mssbridge.cli_support import ConfigOption, load_settings

dkim_app = typer.Typer(help="DKIM signing keys.", no_args_is_help=True)


@dkim_app.command("keygen")
def keygen(
    selector: Annotated[str, typer.Option(help="DKIM selector, e.g. mssbridge2026.")],
    out: Annotated[Path, typer.Option(help="Directory for <selector>.private and .txt.")],
    domain: Annotated[
        str | None, typer.Option(help="Signing domain [default: the mailbox's domain].")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Write an RSA 2048 private key (mode 600) and print the TXT record to publish."""
    from mssbridge.mail.dkim import generate_key

    if domain is None:
        domain = load_settings(config).mailbox.address.rsplit("@", 1)[-1].lower()
    try:
        path, record = generate_key(selector, domain, out)
    except FileExistsError as exc:
        typer.secho(f"dkim keygen: {exc.filename} exists", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from exc
    typer.echo(f"private key: {path}")
    typer.echo(f"publish: {selector}._domainkey.{domain}. IN TXT")
    typer.echo(record)
    typer.echo(f"then set [dkim] key_file = {str(path)!r}, selector = {selector!r}")
