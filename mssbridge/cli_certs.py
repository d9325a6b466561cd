"""``mssbridge certs``: show and check the IGC-Santé certificates and CRLs, fetch CRLs, test PKI."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mssbridge import config as config_module
from mssbridge.cli_support import EXIT_CONFIG, ConfigOption
from mssbridge.errors import ConfigError

if TYPE_CHECKING:
    from mssbridge.security.certinfo import TrustReport

certs_app = typer.Typer(
    help="Inspect the certificates and CRLs, fetch CRLs, make a test PKI.", no_args_is_help=True
)


def _tls(config: Path | None) -> config_module.TlsSection:
    try:
        return config_module.load(config_module.config_path(config)).tls
    except ConfigError as exc:
        typer.secho(f"configuration error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG) from exc


def _when(moment: dt.datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "-"


def _report(tls: config_module.TlsSection) -> TrustReport:
    from mssbridge.security import certinfo

    try:
        return certinfo.inspect(tls)
    except ConfigError as exc:
        typer.secho(f"FAIL  {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from exc


def _print_report(tls: config_module.TlsSection, verbose: bool) -> bool:
    """Print the trust report; True when nothing is wrong (warnings allowed)."""
    from mssbridge.security.certinfo import load_certificates

    report = _report(tls)
    now = dt.datetime.now(dt.UTC)
    cert = report.certificate
    if verbose:
        typer.echo(f"certificate  {tls.cert_file}")
        typer.echo(f"  subject    {cert.subject}")
        typer.echo(f"  issuer     {cert.issuer}")
        typer.echo(f"  serial     {cert.serial:#x}")
        typer.echo(
            f"  validity   {_when(cert.not_before)} -> {_when(cert.not_after)} "
            f"({cert.state(now)}, {cert.days_left(now)} days left)"
        )
        chain = "ok" if report.chain.ok else "BROKEN"
        typer.echo(f"  chain      {chain}: {report.chain.detail}")
        for step in report.chain.path:
            typer.echo(f"               {step}")
        anchors = load_certificates(tls.ca_file)
        typer.echo(f"anchors      {tls.ca_file} ({len(anchors)})")
        for anchor in anchors:
            typer.echo(
                f"  - {anchor.subject.rfc4514_string()} (until {_when(anchor.not_valid_after_utc)})"
            )
        for crl in report.crls:
            state = "EXPIRED" if crl.expired(now) else "valid"
            typer.echo(f"CRL          {crl.source}")
            typer.echo(f"  issuer     {crl.issuer}")
            typer.echo(
                f"  updated    {_when(crl.last_update)}, next {_when(crl.next_update)} ({state})"
            )
            typer.echo(f"  revoked    {crl.revoked} serial(s), signature {crl.signature}")
        mode = report.crl_mode or "off (no tls.crl_files)"
        typer.echo(f"revocation   {mode}")
    for warning in report.warnings:
        typer.secho(f"WARN  {warning}", fg=typer.colors.YELLOW)
    for error in report.errors:
        typer.secho(f"FAIL  {error}", fg=typer.colors.RED)
    if not report.chain.ok and not verbose:
        typer.secho(f"FAIL  chain: {report.chain.detail}", fg=typer.colors.RED)
    return report.ok


@certs_app.command("show")
def show(config: ConfigOption = None) -> None:
    """Print our certificate, its chain status, the anchors and each CRL."""
    _print_report(_tls(config), verbose=True)


@certs_app.command("check")
def check(config: ConfigOption = None) -> None:
    """Exit 1 on an expired certificate or CRL or a broken chain; warn 30 days before expiry."""
    from mssbridge.security.tls import client_context

    tls = _tls(config)
    ok = _print_report(tls, verbose=False)
    try:
        client_context(tls)
    except ConfigError as exc:
        typer.secho(f"FAIL  {exc}", fg=typer.colors.RED)
        ok = False
    if not ok:
        raise typer.Exit(1)
    typer.secho("ok    certificates, chain and CRLs", fg=typer.colors.GREEN)


@certs_app.command("test-pki")
def test_pki(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the test PKI into.")],
) -> None:
    """Write a throw-away PKI shaped like IGC-Santé (never for real servers)."""
    from mssbridge.lab.pki import generate_test_pki

    pki = generate_test_pki(out.resolve())
    typer.echo(f"test PKI in {pki.directory} (for tests and demos only)")
    typer.echo(f"  tls.ca_file   = {pki.ca_bundle}")
    typer.echo(f"  tls.crl_files = [{pki.root_crl}, {pki.intermediate_crl}]")
    typer.echo(f"  server        = {pki.server.chain} / {pki.server.key}")
    for name, files in pki.clients.items():
        typer.echo(f"  client {name}: tls.cert_file = {files.chain}, tls.key_file = {files.key}")


@certs_app.command("fetch-crl")
def fetch_crl(
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds per download.")] = 30.0,
) -> None:
    """Download tls.crl_urls into tls.crl_files; on failure keep the last valid CRL, exit 1."""
    from mssbridge.security import certinfo, crlfetch

    tls = _tls(config)
    if not tls.crl_urls:
        typer.secho("no tls.crl_urls configured", err=True, fg=typer.colors.RED)
        raise typer.Exit(EXIT_CONFIG)
    issuers = [*certinfo.load_certificates(tls.ca_file), *certinfo.load_certificates(tls.cert_file)]
    failed = False
    for url, path in zip(tls.crl_urls, tls.crl_files, strict=True):
        result = crlfetch.fetch_crl(url, path, issuers, timeout=timeout)
        if result.updated:
            typer.secho(f"ok    {path}: {result.detail}", fg=typer.colors.GREEN)
        else:
            failed = True
            colour = typer.colors.YELLOW if result.usable else typer.colors.RED
            typer.secho(f"FAIL  {path} from {url}: {result.detail}", fg=colour)
    typer.echo("reload the running bridge to use them: systemctl reload mssbridge (SIGHUP)")
    if failed:
        raise typer.Exit(1)
