"""Patient context with the real store: commands, sealed storage, and document-bearing mails."""

from __future__ import annotations

import email
import io
import logging
import ssl
import subprocess
import sys
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.message import Message
from email.policy import default
from pathlib import Path
from typing import Any, cast

import pytest
from fixtures.settings import offline_config
from sqlalchemy import text

from mssbridge import config
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.mail.smtp_out import Submission
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.security.atrest import Sealer
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox, RowState

pytestmark = pytest.mark.integration

SERVER = "hospital.test"
PEER = "dr.house@chu-test.mssante.fr"
ROOM = "!portal:hospital.test"
DOCTOR = f"@doc:{SERVER}"
NURSE = f"@nurse:{SERVER}"
NIL = "MSSBRIDGE-TEST-1"
INS = "280017505600150"
KIT = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "validate-cda"
SET_PATIENT = (
    f'!mss patient ins={INS} nom=Test-Échange prenoms="Jeanne Hélène" naissance=1980-01-01 '
    "sexe=F lieu=75056 qualifiee=oui"
)


@dataclass
class FakeRooms:
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)

    async def send(self, sender: str, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        self.sent.append((room_id, content))
        return f"$ev-{txn_id}"

    async def display_name(self, room_id: str, user_id: str) -> str:
        return "Dr Pierre Médecin" if user_id == DOCTOR else "Claire Infirmière"

    async def set_topic(self, user_id: str, room_id: str, topic: str) -> None:
        self.topics.append(topic)

    def notices(self) -> list[str]:
        return [str(content.get("body")) for _room, content in self.sent]


@dataclass
class World:
    ctx: BridgeContext
    rooms: FakeRooms
    store: Store
    submitted: list[bytes]


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    path = tmp_path / "config.toml"
    offline_config(
        path,
        f"matrix.server_name={SERVER}",
        "mailbox.address=bal@hopital.mssante.fr",
        "mailbox.self_copy=false",
        "whitelist.enforce=false",
        f'access.patient_context=["{DOCTOR}"]',
        f"mssante.nil={NIL}",
        "mssante.name=CH Exemple",
        "mssante.ins_root=1.2.250.1.213.1.4.10",
    )
    path.write_text(path.read_text().replace('finess = ""', 'finess = "999999999"'))
    settings = config.load(path)
    engine = make_engine(database_url)
    await migrate(engine)
    store = Store(engine, Sealer.from_file(settings.bridge.key_file))
    submitted: list[bytes] = []

    async def submit(sender: str, recipients: Sequence[str], message: bytes) -> Submission:
        submitted.append(message)
        return Submission("2.0.0 Ok", tuple(recipients))

    rooms = FakeRooms()
    ctx = BridgeContext(
        settings, store, cast(MatrixRooms, rooms), submit, ssl.create_default_context()
    )
    await store.create_portal(subject="Avis plaie", correspondents=[PEER], room_id=ROOM)
    yield World(ctx, rooms, store, submitted)
    await engine.dispose()


async def _say(world: World, event_id: str, sender: str, body: str) -> Outbox:
    event = {
        "event_id": event_id,
        "room_id": ROOM,
        "sender": sender,
        "type": "m.room.message",
        "origin_server_ts": 1_736_067_600_000,
        "content": {"msgtype": "m.text", "body": body},
    }
    await world.store.store_transaction(f"t-{event_id}", [event])
    row = next(r for r in await world.store.rows(Outbox, ["pending"]) if r.event_id == event_id)
    await OutboundFlow(world.ctx).handle(row)
    fresh = await world.store.get(Outbox, row.id or 0)
    assert fresh is not None
    return fresh


def _parts(mail: Message) -> dict[str, bytes]:
    return {
        str(part.get_filename()): cast(bytes, part.get_payload(decode=True))
        for part in mail.walk()
        if part.get_filename()
    }


async def test_patient_context_makes_document_mails(
    world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Before any patient: a plain mail, with X-MSS-NIL all the same.
    assert (await _say(world, "$plain", NURSE, "Bonjour")).state == RowState.DONE
    plain = email.message_from_bytes(world.submitted[-1], policy=default)
    assert plain["X-MSS-NIL"] == NIL and plain["X-MSS-CODECDA"] is None
    assert not _parts(plain)

    # Only those listed in access.patient_context may set it.
    await _say(world, "$deny", NURSE, SET_PATIENT)
    assert "pas autorisé(e)" in world.rooms.notices()[-1]
    await _say(world, "$bad", DOCTOR, SET_PATIENT.replace(INS, INS[:-1] + "1"))
    assert "la clé ne correspond pas" in world.rooms.notices()[-1]
    await _say(world, "$set", DOCTOR, SET_PATIENT)
    assert "TEST-ÉCHANGE Jeanne Hélène" in world.rooms.notices()[-1]
    assert INS not in world.rooms.notices()[-1]
    assert world.rooms.topics == ["Avis plaie — Patient : TEST-ÉCHANGE Jeanne (01/01/1980)"]

    # Stored sealed: the raw column never holds the identity.
    async with world.store.engine.connect() as conn:
        (raw,) = (await conn.execute(text("SELECT patient FROM portal"))).one()
    assert raw and INS.encode() not in bytes(raw) and b"Jeanne" not in bytes(raw)

    # Anyone of the room may see it, masked.
    await _say(world, "$show", NURSE, "!mss patient show")
    assert "•••••••••••0150" in world.rooms.notices()[-1]

    row = await _say(world, "$m1", DOCTOR, "La plaie est propre, on arrête l'antibiotique.")
    assert row.state == RowState.DONE
    mail = email.message_from_bytes(world.submitted[-1], policy=default)
    assert str(mail["Subject"]).startswith("XDM/1.0/DDM+CR ou fiche de consultation")
    assert "TEST-ÉCHANGE Jeanne 01/01/1980" in str(mail["Subject"])
    assert (mail["X-MSS-CODECDA"], mail["X-MSS-INS"], mail["X-MSS-NIL"]) == ("11488-4", "O", NIL)
    files = _parts(mail)
    assert set(files) == {"IHE_XDM.ZIP", "20250105_CR_consultation_TEST_ECHANGE_Jeanne.pdf"}
    with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as archive:
        cda = archive.read("IHE_XDM/SUBSET01/DOC0001.XML")
    assert INS.encode() in cda and b"on arr" not in cda  # the text is in the PDF only

    if not KIT.is_file():
        pytest.fail(f"CDA conformance kit not found at {KIT}")
    (tmp_path / "doc.xml").write_bytes(cda)
    result = subprocess.run(
        [sys.executable, str(KIT), "-q", str(tmp_path / "doc.xml")],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stdout

    # Clearing: plain mails again.
    await _say(world, "$clear", DOCTOR, "!mss patient clear")
    assert world.rooms.topics[-1] == "Avis plaie"
    await _say(world, "$m2", NURSE, "Noté.")
    last = email.message_from_bytes(world.submitted[-1], policy=default)
    assert not _parts(last) and last["X-MSS-NIL"] == NIL
    assert not str(last["Subject"]).startswith("XDM/")

    log_text = caplog.text
    for secret in (INS, "0150", "TEST-ÉCHANGE", "ECHANGE", "Jeanne", "1980"):
        assert secret not in log_text, secret
