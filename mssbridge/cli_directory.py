"""``mssbridge directory``: import the MSSanté directory extraction, search it, make test files."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mssbridge.cli_support import ConfigOption, load_settings, with_store

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

directory_app = typer.Typer(
    help="The MSSanté directory (public extraction file): import and search.",
    no_args_is_help=True,
)

EXIT_REFUSED = 1


@directory_app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="Extraction_Correspondance_MSSante_*.txt or its ZIP")
    ],
    config: ConfigOption = None,
) -> None:
    """Stream the file into the store, replacing the previous import in one transaction."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    from mssbridge.directory.extraction import ExtractionError, open_extraction
    from mssbridge.store.directory_repo import DirectoryRepo

    settings = load_settings(config)
    started = time.monotonic()
    try:
        reader = open_extraction(file)
    except (ExtractionError, OSError) as exc:
        typer.secho(f"extraction refused, nothing imported: {exc}", err=True, fg="red")
        raise typer.Exit(EXIT_REFUSED) from exc
    inserted = 0

    with (
        reader,
        Progress(
            TextColumn("importing"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rows]} rows"),
            TimeElapsedColumn(),
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("import", total=reader.size, rows=0)

        def progress(count: int) -> None:
            bar.update(task, completed=reader.position(), rows=count)

        async def action(store: Store) -> None:
            nonlocal inserted
            inserted = await DirectoryRepo(store).replace(reader.rows(), progress=progress)

        try:
            asyncio.run(with_store(settings, action))
        except ExtractionError as exc:
            typer.secho(f"extraction refused, old directory kept: {exc}", err=True, fg="red")
            raise typer.Exit(EXIT_REFUSED) from exc
    stats = reader.stats
    elapsed = time.monotonic() - started
    typer.echo(
        f"imported   {inserted} entries from {stats.lines} lines in {elapsed:.1f} s "
        f"({inserted / max(elapsed, 1e-6):.0f} rows/s)"
    )
    typer.echo(f"repeated   {stats.duplicates} (same address and person, kept once)")
    typer.echo(f"skipped    {stats.skipped_total}")
    for reason, count in sorted(stats.skipped.items()):
        typer.echo(f"  {count:>8}  {reason}")
    for line, reason in stats.errors:
        typer.echo(f"  line {line}: {reason}")


@directory_app.command("search")
def search(
    query: Annotated[
        str, typer.Argument(help="An address, an RPPS/ADELI number or a family-name prefix")
    ] = "",
    name: Annotated[str, typer.Option("--name", help="Family-name prefix")] = "",
    rpps: Annotated[str, typer.Option("--rpps", help="RPPS, ADELI or national id")] = "",
    profession: Annotated[
        str, typer.Option("--profession", help="Profession code (10) or label part")
    ] = "",
    city: Annotated[str, typer.Option("--city", help="City (case and accents ignored)")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 20,
    config: ConfigOption = None,
) -> None:
    """Mailboxes of the imported directory matching every criterion given."""
    from mssbridge.store.directory_repo import DirectoryRepo

    if not any(v.strip() for v in (query, name, rpps, profession, city)):
        typer.secho("give a QUERY or at least one of --name/--rpps/--profession/--city", err=True)
        raise typer.Exit(EXIT_REFUSED)
    settings = load_settings(config)

    async def action(store: Store) -> None:
        entries = await DirectoryRepo(store).search(
            query, name=name, rpps=rpps, profession=profession, city=city, limit=limit
        )
        if not entries:
            typer.echo("no match")
            raise typer.Exit(EXIT_REFUSED)
        for e in entries:
            person = " ".join(p for p in (e.civility, e.given_name, e.family_name) if p)
            who = person or e.service or "-"
            job = " / ".join(p for p in (e.profession_label, e.know_how_label) if p) or "-"
            typer.echo(f"{e.address}  {who}  [{job}]  {e.structure_name or '-'}  {e.city or '-'}")

    asyncio.run(with_store(settings, action))


@directory_app.command("generate")
def generate(
    rows: Annotated[int, typer.Option("--rows", min=0, help="Data lines to write")],
    out: Annotated[Path, typer.Option("--out", help="Output file; .zip to get a ZIP")],
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """Write a synthetic extraction (invented people) in the public file's exact layout."""
    from mssbridge.directory.synthetic import generate_file

    stats = generate_file(out, rows, seed=seed)
    typer.echo(
        f"wrote      {out}: {stats.lines} lines ({stats.per} PER, {stats.org} ORG, "
        f"{stats.duplicates} repeated, {stats.malformed} malformed), "
        f"{stats.distinct} distinct entries"
    )
