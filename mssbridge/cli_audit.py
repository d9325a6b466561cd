"""``mssbridge audit export``: the audit trail as CSV or JSON lines, streamed by time range."""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mssbridge.cli_support import ConfigOption, load_settings, with_store

if TYPE_CHECKING:
    from mssbridge.store.repo import Store

audit_app = typer.Typer(help="The audit trail (metadata only, never content).")

FIELDS = (
    "time",
    "action",
    "direction",
    "queue",
    "row_id",
    "portal_id",
    "actor",
    "peer",
    "message_id",
    "outcome",
)


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


def parse_when(text: str) -> float:
    """A date or an ISO 8601 date and time (UTC unless it names an offset) as a timestamp."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 date: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


@audit_app.command("export")
def export(
    since: Annotated[str, typer.Option(help="First day or instant, e.g. 2026-01-01.")],
    until: Annotated[
        str | None, typer.Option(help="Day or instant the export stops before (exclusive).")
    ] = None,
    format_: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.CSV,
    config: ConfigOption = None,
) -> None:
    """Write the audit rows of a time range to standard output, oldest first."""
    from mssbridge.store import audit

    settings = load_settings(config)
    start, stop = parse_when(since), (parse_when(until) if until else None)

    async def action(store: Store) -> None:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if format_ is ExportFormat.CSV:
            writer.writerow(FIELDS)
        async for row in audit.export(store, start, stop):
            record: dict[str, Any] = {
                "time": datetime.fromtimestamp(row.at, tz=UTC).isoformat(timespec="milliseconds"),
                **{name: getattr(row, name) for name in FIELDS[1:]},
            }
            if format_ is ExportFormat.CSV:
                writer.writerow(["" if record[k] is None else record[k] for k in FIELDS])
            else:
                sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")

    asyncio.run(with_store(settings, action))
    sys.stdout.flush()
