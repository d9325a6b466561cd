"""``start`` by name, RPPS or ADELI through the directory, and the directory names of ghosts."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from mssbridge.directory.choices import PickError
from mssbridge.directory.extraction import DirectoryRow
from mssbridge.directory.lookup import (
    MAX_LISTED,
    StartKind,
    StartRequest,
    candidates,
    choice_text,
    city_keys,
    directory_name,
    family_keys,
    hint_text,
    no_match_text,
    parse_start,
    rank,
    truncated_text,
)
from mssbridge.flows.context import BridgeContext
from mssbridge.store.directory_repo import MAX_ROWS, DirectoryRepo
from mssbridge.store.tables import Outbox

log = logging.getLogger("mssbridge.directory")

EMPTY_DIRECTORY = (
    "L'annuaire MSSanté n'est pas chargé sur cette passerelle : indiquez l'adresse MSSanté du "
    "correspondant (l'équipe informatique le charge avec « mssbridge directory import »)."
)
NO_LIST = (
    "Aucune liste de correspondants en attente pour vous dans ce salon (elle vaut {minutes} "
    "minutes) : refaites la recherche."
)
OUT_OF_RANGE = "Choisissez un numéro entre 1 et {count}."


async def ghost_directory_name(ctx: BridgeContext, address: str) -> str | None:
    """The directory's name for ``address``, looked up once per address and hour."""
    now = ctx.store.clock()
    known, name = ctx.directory.names.get(address, now)
    if not known:
        name = directory_name(await DirectoryRepo(ctx.store).rows_by_address(address))
        ctx.directory.names.put(address, name, now)
    return name


def _people_first(rows: Sequence[DirectoryRow]) -> list[DirectoryRow]:
    return sorted(rows, key=lambda r: (r.mailbox_type != "PER", r.address))


async def resolve_start(
    ctx: BridgeContext, row: Outbox, args: Sequence[str]
) -> tuple[str, str] | None:
    """The (address, subject) that ``start args`` names, or None once a notice has answered.

    An address is returned as typed; a name or identifier with one mailbox gives it; several
    are listed for ``start <n>``, remembered for this user in this room only.
    """
    prefix = ctx.settings.matrix.command_prefix
    request = parse_start(args)
    now = ctx.store.clock()

    async def say(text: str) -> None:
        await ctx.notice(row.room_id, text, f"mssb-directory-{row.id}", row.event_id)

    if request.kind is StartKind.ADDRESS:
        return request.text, request.subject
    if request.kind is StartKind.EMPTY:
        await say(hint_text(prefix))
        return None
    if request.kind is StartKind.BAD_NUMBER:
        await say(no_match_text(request, prefix))
        return None
    choices = ctx.directory.choices
    if request.kind is StartKind.PICK:
        picked = choices.pick(row.sender, row.room_id, request.number, now)
        if picked is PickError.NONE:
            await say(NO_LIST.format(minutes=int(choices.window // 60)))
            return None
        if picked is PickError.OUT_OF_RANGE:
            await say(OUT_OF_RANGE.format(count=choices.count(row.sender, row.room_id)))
            return None
        assert isinstance(picked, tuple)
        address, subject = picked
        return address, request.subject or subject
    repo = DirectoryRepo(ctx.store)
    if request.kind is StartKind.IDENTIFIER:
        fetched = await repo.rows_by_identifier(request.text)
        ranked = _people_first(fetched)
    else:
        fetched, ranked = await rows_for_name(repo, request)
    found = candidates(ranked)
    log.info("outbox row %s: directory look-up gave %d candidate(s)", row.id, len(found))
    truncated = "\n" + truncated_text(MAX_ROWS) if len(fetched) >= MAX_ROWS else ""
    if len(found) == 1 and not truncated:
        return found[0].address, request.subject
    if found:
        listed = tuple(c.address for c in found[:MAX_LISTED])
        choices.offer(row.sender, row.room_id, listed, request.subject, now)
        await say(choice_text(request, found, prefix) + truncated)
    elif await repo.is_empty():
        await say(EMPTY_DIRECTORY)
    else:
        await say(no_match_text(request, prefix, near=len(fetched)) + truncated)
    return None


async def rows_for_name(
    repo: DirectoryRepo, request: StartRequest
) -> tuple[list[DirectoryRow], list[DirectoryRow]]:
    """(rows read, those that fit, ranked); past ``MAX_ROWS`` namesakes the city narrows first."""
    keys = family_keys(request.words)
    fetched = await repo.rows_by_family(keys, MAX_ROWS)
    if len(fetched) >= MAX_ROWS and len(request.words) > 1:
        in_city = await repo.rows_by_family(keys, MAX_ROWS, city_keys(request.words))
        ranked = rank(request, in_city)
        if ranked:
            return in_city, ranked
    return fetched, rank(request, fetched)
