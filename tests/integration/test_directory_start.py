"""Directory look-ups on SQLite and PostgreSQL: a synthetic extraction, the query plans, and
``start`` by name, RPPS and pick through the command flow with the real store."""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from mssbridge.config import Settings
from mssbridge.directory.extraction import DirectoryRow, open_extraction
from mssbridge.directory.lookup import candidates, family_keys, parse_start, rank
from mssbridge.directory.synthetic import extraction_line, generate_file
from mssbridge.flows.commands import CommandFlow
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.directory_start import ghost_directory_name
from mssbridge.store.directory_repo import DirectoryRepo
from mssbridge.store.repo import Store, correspondents_of
from mssbridge.store.tables import Outbox, Portal

pytestmark = pytest.mark.integration

CLAIRE = DirectoryRow(
    mailbox_type="PER",
    address="claire.vauquelin@medecin.mssante.fr",
    id_type="8",
    pp_id="10101010101",
    national_id="810101010101",
    civility="DR",
    family_name="Vauquelin",
    given_name="Claire",
    profession_code="10",
    profession_label="Médecin",
    know_how_label="Pédiatrie",
    city="LYON",
    postal_code="69003",
    department="69",
)
CLAIRE_CHU = dataclasses.replace(
    CLAIRE,
    address="c.vauquelin@chu-lyon.mssante.fr",
    structure_id="1690000001",
    structure_name="Centre Hospitalier Universitaire de Lyon",
    service="Pédiatrie",
)
MARC = dataclasses.replace(
    CLAIRE,
    address="marc.vauquelin@medecin.mssante.fr",
    pp_id="10202020202",
    national_id="810202020202",
    given_name="Marc",
    know_how_label="Médecine générale",
)
MARC_BREST = dataclasses.replace(
    MARC,
    address="m.vauquelin@medecin.mssante.fr",
    pp_id="10303030303",
    national_id="810303030303",
    city="BREST",
    postal_code="29200",
    department="29",
)
KNOWN = (CLAIRE, CLAIRE_CHU, MARC, MARC_BREST)
DM = "!dm:hospital.test"
ALICE = "@alice:hospital.test"
BOB = "@bob:hospital.test"


async def _import(store: Store, tmp_path: Path, rows: int = 3000) -> list[DirectoryRow]:
    """A synthetic extraction with the known people appended, imported; its rows."""
    path = tmp_path / "extraction.txt"
    generate_file(path, rows, seed=11)
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(extraction_line(row) + "\n" for row in KNOWN)
    with open_extraction(path) as reader:
        kept = list(reader.rows())
    await DirectoryRepo(store).replace(kept)
    return kept


async def test_lookups_by_family_identifier_and_address(store: Store, tmp_path: Path) -> None:
    repo = DirectoryRepo(store)
    assert await repo.is_empty()
    await _import(store, tmp_path)
    assert not await repo.is_empty()
    assert set(await repo.rows_by_family(["vauquelin", "lyon"])) == set(KNOWN)
    assert await repo.rows_by_family([]) == []
    request = parse_start(["Dr", "Vauquelin", "Lyon"])
    found = candidates(rank(request, await repo.rows_by_family(family_keys(request.words))))
    assert sorted(c.address for c in found) == sorted(r.address for r in (CLAIRE, CLAIRE_CHU, MARC))
    for number in ("10101010101", "810101010101"):
        assert set(await repo.rows_by_identifier(number)) == {CLAIRE, CLAIRE_CHU}
    assert await repo.rows_by_address(" C.Vauquelin@chu-lyon.mssante.fr") == [CLAIRE_CHU]
    assert await repo.rows_by_address("nobody@medecin.mssante.fr") == []


async def test_every_generated_person_is_found_by_name_city_and_number(
    store: Store, tmp_path: Path
) -> None:
    rows = await _import(store, tmp_path)
    repo = DirectoryRepo(store)
    people = [r for r in rows if r.mailbox_type == "PER"][::40]
    assert len(people) > 40
    for row in people:
        request = parse_start([row.family_name, row.given_name, row.city])
        ranked = rank(request, await repo.rows_by_family(family_keys(request.words)))
        assert row.address in {c.address for c in candidates(ranked)}, row
        assert row in await repo.rows_by_identifier(row.pp_id)


@contextlib.contextmanager
def _statements(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM directory_entry" in statement:
            seen.append((statement, parameters))

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _plan(engine: AsyncEngine, statement: str, parameters: Any) -> str:
    async with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            await conn.execute(text("SET enable_seqscan = off"))  # an index or nothing
            result = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            return "\n".join(str(r[0]) for r in result)
        result = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(r[-1]) for r in result)


async def test_lookups_are_served_by_indexes(store: Store, tmp_path: Path) -> None:
    await _import(store, tmp_path, rows=500)
    repo = DirectoryRepo(store)
    with _statements(store.engine) as seen:
        await repo.rows_by_family(family_keys(("le", "goff", "lyon")))
        await repo.rows_by_identifier("10101010101")
        await repo.rows_by_address(CLAIRE.address)
        await repo.search(name="vauq")
        await repo.search(name="vauq", city="lyon")
        await repo.search("810101010101")
        await repo.search(CLAIRE.address)
    assert len(seen) == 7
    for statement, parameters in seen:
        plan = await _plan(store.engine, statement, parameters)
        if store.engine.dialect.name == "postgresql":
            assert "Index" in plan and "Seq Scan" not in plan, (statement, plan)
        else:
            assert "USING INDEX" in plan or "USING COVERING INDEX" in plan, (statement, plan)
            scans = [line for line in plan.splitlines() if line.startswith("SCAN directory_entry")]
            assert not scans, (statement, plan)


class RecordingRooms:
    """Stands for the homeserver: records calls; rooms it creates are numbered."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **_kwargs: Any) -> Any:
            self.calls.append((name, args))
            if name == "create_room":
                return f"!portal{len(self.calls)}:hospital.test"
            return {"recent_events": []}.get(name, "$event")

        return call

    def notices(self) -> list[str]:
        return [str(args[2]["body"]) for name, args in self.calls if name == "send"]

    def ghost_names(self) -> list[str]:
        return [str(args[1]) for name, args in self.calls if name == "ensure_ghost"]

    def rooms_created(self) -> int:
        return sum(name == "create_room" for name, _ in self.calls)


def _settings() -> Settings:
    return Settings.model_validate(
        {
            "matrix": {
                "homeserver_url": "http://127.0.0.1:1",
                "server_name": "hospital.test",
                "as_token": "a",
                "hs_token": "h",
            },
            "tls": {"ca_file": "ca.pem", "cert_file": "c.pem", "key_file": "k.pem"},
            "mailbox": {
                "address": "messagerie@chu-test.mssante.fr",
                "smtp": {"host": "127.0.0.1"},
                "imap": {"host": "127.0.0.1"},
            },
            "whitelist": {"enforce": False},
        }
    )


class Bot:
    """The command flow on the real store, fed the way the outbox worker feeds it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.rooms = RecordingRooms()
        self.ctx = BridgeContext(
            _settings(),
            store,
            cast(Any, self.rooms),
            cast(Any, None),
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        )
        self.count = 0

    async def say(self, sender: str, body: str, room: str = DM) -> str:
        """Run one command; the bot's answer (the last notice)."""
        self.count += 1
        event = {
            "event_id": f"$c{self.count}",
            "room_id": room,
            "sender": sender,
            "type": "m.room.message",
            "content": {"msgtype": "m.text", "body": body},
        }
        await self.store.store_transaction(f"t{self.count}", [event])
        [row] = [
            r for r in await self.store.rows(Outbox, ["pending"]) if r.event_id == event["event_id"]
        ]
        await CommandFlow(self.ctx).run(row, event, None)
        return self.rooms.notices()[-1]


async def test_start_by_name_lists_the_candidates_and_a_pick_opens_the_conversation(
    store: Store, tmp_path: Path
) -> None:
    await _import(store, tmp_path)
    bot = Bot(store)
    answer = await bot.say(ALICE, "!mss start Dr Vauquelin Lyon -- Avis pédiatrique")
    lines = answer.splitlines()
    assert lines[0] == "3 correspondants trouvés pour « Dr Vauquelin Lyon » :"
    # same fit: by given name, then address
    addresses = [line.split(" — ")[-1] for line in lines[1:4]]
    assert addresses == [CLAIRE_CHU.address, CLAIRE.address, MARC.address]
    assert lines[3].startswith("3. Dr Marc Vauquelin — Médecin, Médecine générale — 69003 LYON")
    assert "!mss start <numéro>" in lines[4]
    assert bot.rooms.rooms_created() == 0
    third = MARC.address

    # Bob has no list in this room; Alice's list is hers alone.
    assert (await bot.say(BOB, "!mss start 3")).startswith("Aucune liste de correspondants")
    assert await bot.say(ALICE, "!mss start 7") == "Choisissez un numéro entre 1 et 3."
    answer = await bot.say(ALICE, "!mss start 3")
    assert answer.startswith(f"Conversation ouverte avec {third} : https://matrix.to/#/!portal")
    assert bot.rooms.rooms_created() == 1
    assert bot.rooms.ghost_names()[-1] == "Dr Marc Vauquelin (MSSanté)"
    [portal] = await _portals(store)
    assert (correspondents_of(portal), portal.subject) == ([third], "Avis pédiatrique")


async def _portals(store: Store) -> list[Portal]:
    async with store.session() as session:
        return list((await session.execute(select(Portal))).scalars())


async def test_one_match_starts_at_once_and_no_match_gives_a_hint(
    store: Store, tmp_path: Path
) -> None:
    bot = Bot(store)
    empty = await bot.say(ALICE, "!mss start Dr Vauquelin")
    assert empty.startswith("L'annuaire MSSanté n'est pas chargé")
    await _import(store, tmp_path)
    answer = await bot.say(ALICE, "!mss start vauquelin marc brest")
    assert answer.startswith(f"Conversation ouverte avec {MARC_BREST.address}")
    answer = await bot.say(ALICE, "!mss start Dr Vauquelin Lille")
    assert answer.startswith("Aucun correspondant MSSanté trouvé dans l'annuaire pour")
    assert "4 personne(s) portent ce nom" in answer and "RPPS" in answer
    assert (await bot.say(ALICE, "!mss start 12345")).startswith("« 12345 » n'est pas")
    # one person, two addresses: both listed
    answer = await bot.say(ALICE, f"!mss start {CLAIRE.pp_id} Avis")
    assert answer.startswith("Dr Claire Vauquelin a 2 adresses MSSanté :")
    assert CLAIRE.address in answer and CLAIRE_CHU.address in answer
    # an address still starts directly, directory or not
    answer = await bot.say(ALICE, "!mss start someone@else.mssante.fr")
    assert answer.startswith("Conversation ouverte avec someone@else.mssante.fr")
    assert bot.rooms.ghost_names()[-1] == "someone@else.mssante.fr (MSSanté)"
    assert bot.rooms.rooms_created() == 2


async def test_ghost_names_come_from_the_directory_once_per_address(
    store: Store, tmp_path: Path
) -> None:
    await _import(store, tmp_path, rows=100)
    now = [1000.0]
    store.clock = lambda: now[0]
    ctx = Bot(store).ctx
    assert await ghost_directory_name(ctx, MARC.address) == "Dr Marc Vauquelin"
    assert await ghost_directory_name(ctx, "unknown@x.mssante.fr") is None
    await DirectoryRepo(store).replace([dataclasses.replace(MARC, given_name="Marcel")])
    with _statements(store.engine) as seen:
        assert await ghost_directory_name(ctx, MARC.address) == "Dr Marc Vauquelin"  # cached
        assert await ghost_directory_name(ctx, "unknown@x.mssante.fr") is None
    assert seen == []
    now[0] += 3601
    assert await ghost_directory_name(ctx, MARC.address) == "Dr Marcel Vauquelin"


async def test_past_the_row_cap_the_city_narrows_and_the_answer_says_it_may_be_incomplete(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _import(store, tmp_path, rows=100)
    monkeypatch.setattr("mssbridge.flows.directory_start.MAX_ROWS", 3)  # 4 Vauquelin rows
    bot = Bot(store)
    answer = await bot.say(ALICE, "!mss start Vauquelin Brest")
    assert answer.startswith(f"Conversation ouverte avec {MARC_BREST.address}")
    answer = await bot.say(ALICE, "!mss start Vauquelin Marc")  # no city to narrow with
    assert "Plus de 3 fiches portent ce nom : la liste peut être incomplète." in answer
    assert bot.rooms.rooms_created() == 1
