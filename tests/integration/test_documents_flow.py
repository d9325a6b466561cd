"""Health documents with the real store: received packages, ``!mss export`` and its versions."""

from __future__ import annotations

import contextlib
import email
import io
import logging
import ssl
import zipfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.policy import SMTP, default
from pathlib import Path
from typing import Any, cast

import pytest
from fixtures.settings import offline_config
from sqlalchemy import delete, update
from sqlmodel import col

from mssbridge import config
from mssbridge.cda.document import build_cda, parse_xml, read_header
from mssbridge.cda.model import InstanceId
from mssbridge.cda.sample import sample_request, sample_submission
from mssbridge.cda.xdm import build_xdm
from mssbridge.errors import TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.inbound import InboundFlow
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.flows.patient import document_root, message_set_root, thread_set_root
from mssbridge.mail.smtp_out import Submission
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.security.atrest import Sealer
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.documents_repo import DocumentRepo, NewDocument
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, MessageMap, Outbox, Portal, RowState

pytestmark = pytest.mark.integration

SERVER = "hospital.test"
PEER = "dr.house@chu-test.mssante.fr"
ROOM = "!portal:hospital.test"
DOCTOR = f"@doc:{SERVER}"
NURSE = f"@nurse:{SERVER}"
INS = "280017505600150"
SET_PATIENT = (
    f'!mss patient ins={INS} nom=Test-Échange prenoms="Jeanne Hélène" naissance=1980-01-01 '
    "sexe=F lieu=75056 qualifiee=oui"
)
PDF = b"%PDF-1.4\n% stand-in\n%%EOF\n"
ROOT = "<root-1@hopital.mssante.fr>"


@dataclass
class FakeRooms:
    """The Matrix side, recorded; ``fail_uploads`` makes every upload a temporary failure."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    fail_uploads: bool = False

    async def send(self, sender: str, room_id: str, content: dict[str, Any], txn_id: str) -> str:
        self.sent.append((txn_id, content))
        return f"$ev-{txn_id}"

    async def upload(self, sender: str, data: bytes, mimetype: str, filename: str) -> str:
        if self.fail_uploads:
            raise TemporaryFailure("media repository down")
        self.uploads.append((filename, data))
        return f"mxc://{SERVER}/m{len(self.uploads)}"

    async def display_name(self, room_id: str, user_id: str) -> str:
        return "Dr Pierre Médecin" if user_id == DOCTOR else "Claire Infirmière"

    async def set_topic(self, user_id: str, room_id: str, topic: str) -> None:
        return None

    async def ensure_ghost(self, user_id: str, display_name: str) -> None:
        return None

    async def join(self, user_id: str, room_id: str) -> None:
        return None

    async def show_name_in_room(self, user_id: str, room_id: str, display_name: str) -> None:
        return None

    def bodies(self) -> list[str]:
        return [str(content.get("body")) for _txn, content in self.sent]


@dataclass
class World:
    ctx: BridgeContext
    rooms: FakeRooms
    store: Store
    portal: Portal
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
        "mssante.nil=MSSBRIDGE-TEST-1",
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
    portal = await store.create_portal(
        subject="Avis plaie", correspondents=[PEER], room_id=ROOM, root_message_id=ROOT
    )
    yield World(ctx, rooms, store, portal, submitted)
    await engine.dispose()


# -- versions in the store ---------------------------------------------------------------


def _new(origin: str, set_root: str = "1.2.3") -> NewDocument:
    return NewDocument(origin, set_root, f"1.2.9.{len(origin)}{ord(origin[-1])}", "0" * 64, 2)


async def test_versions_are_allocated_once_per_event(world: World) -> None:
    repo = DocumentRepo(world.store)
    portal_id = world.portal.id or 0
    first = await repo.allocate(portal_id, _new("$a"))
    assert (first.version, first.replaces_root) == (1, None)
    again = await repo.allocate(portal_id, _new("$a"))  # a retry of the same event
    assert (again.id, again.version, again.document_root) == (first.id, 1, first.document_root)
    second = await repo.allocate(portal_id, _new("$b"))
    assert (second.version, second.replaces_root) == (2, first.document_root)
    other = await repo.allocate(portal_id, _new("$c", "1.2.4"))
    assert other.version == 1
    assert [v.version for v in await repo.versions("1.2.3")] == [1, 2]


# -- received packages -------------------------------------------------------------------


def _mail(uid: int, attachments: Sequence[tuple[str, str, bytes]]) -> bytes:
    message = EmailMessage()
    message["From"] = f"Dr House <{PEER}>"
    message["To"] = "bal@hopital.mssante.fr"
    message["Subject"] = f"Documents {uid}"
    message["Message-ID"] = f"<doc{uid}@chu-test.mssante.fr>"
    message["Date"] = "Mon, 05 Jan 2026 10:00:00 +0100"
    message["In-Reply-To"] = ROOT
    message.set_content("Bonjour, voici le compte rendu.")
    for name, mimetype, data in attachments:
        maintype, _, subtype = mimetype.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message.as_bytes(policy=SMTP)


async def _receive(world: World, uid: int, raw: bytes) -> Inbox:
    message_id = f"<doc{uid}@chu-test.mssante.fr>"
    row_id = await world.store.store_mail("bal/INBOX", 1, uid, raw, message_id)
    row = await world.store.get(Inbox, row_id or 0)
    assert row is not None
    with contextlib.suppress(TemporaryFailure):
        await InboundFlow(world.ctx).handle(row)
    fresh = await world.store.get(Inbox, row_id or 0)
    assert fresh is not None
    return fresh


def _package() -> bytes:
    request = sample_request(3)
    return build_xdm([build_cda(request, PDF)], sample_submission(request))


async def test_a_package_is_summarised_and_its_pdf_posted(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    row = await _receive(world, 1, _mail(1, [("IHE_XDM.ZIP", "application/zip", _package())]))
    assert row.state == RowState.DONE
    txns = [txn for txn, _ in world.rooms.sent]
    assert txns == [f"mssb-in-{row.id}-{i}" for i in range(4)]
    text, zip_file, summary, pdf = (c for _, c in world.rooms.sent)
    assert text["body"].startswith("Bonjour") and zip_file["body"] == "IHE_XDM.ZIP"
    assert summary["msgtype"] == "m.text"
    assert "TEST-ÉCHANGE Jeanne Hélène" in summary["body"] and INS in summary["body"]
    assert pdf["msgtype"] == "m.file" and pdf["info"]["mimetype"] == "application/pdf"
    assert world.rooms.uploads[0] == (pdf["body"], PDF)  # uploaded before the first send
    for secret in (INS, "Jeanne", "ÉCHANGE", "compte rendu"):
        assert secret not in caplog.text


async def test_a_pdf_already_attached_is_not_posted_twice(world: World) -> None:
    attachments = [
        ("IHE_XDM.ZIP", "application/zip", _package()),
        ("cr.pdf", "application/pdf", PDF),
    ]
    await _receive(world, 2, _mail(2, attachments))
    kinds = [(c["msgtype"], c["body"][:12]) for _, c in world.rooms.sent]
    assert [k for k, _ in kinds] == ["m.text", "m.file", "m.file", "m.text"]


async def test_a_broken_package_is_reported_and_the_mail_still_relayed(world: World) -> None:
    broken = _package()[:-40]  # truncated: no central directory
    row = await _receive(world, 3, _mail(3, [("IHE_XDM.ZIP", "application/zip", broken)]))
    assert row.state == RowState.DONE
    text, zip_file, notice = (c for _, c in world.rooms.sent)
    assert text["body"].startswith("Bonjour")
    assert zip_file["msgtype"] == "m.file" and world.rooms.uploads[0][1] == broken
    assert notice["msgtype"] == "m.notice"
    assert notice["body"].startswith("⚠️ Pièce jointe IHE_XDM.ZIP non importée : archive ZIP")


async def test_nothing_is_posted_until_the_documents_are_ready(world: World) -> None:
    world.rooms.fail_uploads = True
    raw = _mail(4, [("IHE_XDM.ZIP", "application/zip", _package())])
    row = await _receive(world, 4, raw)
    assert row.state == RowState.PENDING and world.rooms.sent == []
    world.rooms.fail_uploads = False  # the retry posts everything, once
    await InboundFlow(world.ctx).handle(row)
    assert len(world.rooms.sent) == 4


# -- !mss export -------------------------------------------------------------------------


async def _say(world: World, event_id: str, sender: str, body: str, ts: int = 0) -> Outbox:
    event = {
        "event_id": event_id,
        "room_id": ROOM,
        "sender": sender,
        "type": "m.room.message",
        "origin_server_ts": 1_736_067_600_000 + ts,
        "content": {"msgtype": "m.text", "body": body},
    }
    await world.store.store_transaction(f"t-{event_id}", [event])
    row = next(r for r in await world.store.rows(Outbox, ["pending"]) if r.event_id == event_id)
    return await _handle(world, row)


async def _handle(world: World, row: Outbox) -> Outbox:
    await OutboundFlow(world.ctx).handle(row)
    fresh = await world.store.get(Outbox, row.id or 0)
    assert fresh is not None
    return fresh


def _document_of(mail: Message) -> bytes:
    parts = {p.get_filename(): p.get_payload(decode=True) for p in mail.walk() if p.get_filename()}
    with zipfile.ZipFile(io.BytesIO(cast(bytes, parts["IHE_XDM.ZIP"]))) as archive:
        return archive.read("IHE_XDM/SUBSET01/DOC0001.XML")


async def test_export_sends_the_thread_as_versions_of_one_document(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await _say(world, "$x0", DOCTOR, "!mss export")
    assert "Aucun patient" in world.rooms.bodies()[-1] and world.submitted == []
    await _say(world, "$set", DOCTOR, SET_PATIENT)
    await _say(world, "$x1", DOCTOR, "!mss export")
    assert "aucun message relayé" in world.rooms.bodies()[-1] and world.submitted == []

    await _say(world, "$m1", DOCTOR, "La plaie est propre.", ts=1000)
    await _say(world, "$m2", NURSE, "Pansement refait.", ts=2000)
    reply = await _receive(world, 5, _mail(5, []))
    assert reply.state == RowState.DONE
    mails_before = len(world.submitted)

    denied = await _say(world, "$x2", NURSE, "!mss export")
    assert denied.state == RowState.DONE and "pas autorisé(e)" in world.rooms.bodies()[-1]
    assert len(world.submitted) == mails_before

    first = await _say(world, "$x3", DOCTOR, "!mss export", ts=5000)
    assert first.state == RowState.DONE
    assert "3 message(s), version 1 du document." in world.rooms.bodies()[-1]
    mail1 = email.message_from_bytes(world.submitted[-1], policy=default)
    assert str(mail1["Subject"]).startswith("XDM/1.0/DDM+CR ou fiche de consultation")
    assert (mail1["X-MSS-CODECDA"], mail1["X-MSS-INS"]) == ("11488-4", "O")
    v1 = read_header(parse_xml(_document_of(mail1)))
    assert v1.version == 1 and v1.replaces is None
    assert v1.set_id is not None and v1.set_id.root == thread_set_root(
        world.portal.conversation_key
    )

    second = await _say(world, "$x4", DOCTOR, "!mss export", ts=6000)
    assert second.state == RowState.DONE
    assert (
        "version 2 du document (remplace la précédente ; mêmes messages)."
        in (world.rooms.bodies()[-1])
    )
    cda2 = _document_of(email.message_from_bytes(world.submitted[-1], policy=default))
    v2 = read_header(parse_xml(cda2))
    assert (v2.version, v2.set_id, v2.replaces) == (2, v1.set_id, v1.document_id)
    assert v2.document_id != v1.document_id

    # A retry of the same command (a crash before its outcome was recorded) rebuilds the very
    # same document, even when messages came in meanwhile.
    async with world.store.session() as session, session.begin():
        await session.execute(delete(MessageMap).where(col(MessageMap.event_id) == "$x4"))
        await session.execute(
            update(Outbox).where(col(Outbox.id) == second.id).values(state=RowState.PENDING)
        )
    await _say(world, "$m3", NURSE, "Un message de plus.", ts=7000)
    await _handle(world, second)
    assert _document_of(email.message_from_bytes(world.submitted[-1], policy=default)) == cda2

    # New messages since: the next version holds them and says so.
    await _say(world, "$x5", DOCTOR, "!mss export", ts=8000)
    assert world.rooms.bodies()[-1].endswith(
        "4 message(s), version 3 du document (remplace la précédente)."
    )
    v3 = read_header(parse_xml(_document_of(_last_mail(world))))
    assert (v3.version, v3.replaces) == (3, v2.document_id)

    for secret in (INS, "Jeanne", "ÉCHANGE", "plaie", "Pansement"):
        assert secret not in caplog.text


async def test_each_message_is_its_own_document_and_an_edit_replaces_it(world: World) -> None:
    await _say(world, "$set", DOCTOR, SET_PATIENT)
    await _say(world, "$m1", DOCTOR, "Plaie propre.")
    first = read_header(parse_xml(_document_of(_last_mail(world))))
    await _say(world, "$m2", DOCTOR, "Pansement demain.")
    second = read_header(parse_xml(_document_of(_last_mail(world))))
    assert (first.version, second.version) == (1, 1)
    assert first.set_id == InstanceId(message_set_root("$m1")) != second.set_id
    assert first.document_id == InstanceId(document_root("$m1")) != second.document_id

    edit = {
        "event_id": "$m1-edit",
        "room_id": ROOM,
        "sender": DOCTOR,
        "type": "m.room.message",
        "origin_server_ts": 1_736_067_700_000,
        "content": {
            "msgtype": "m.text",
            "body": "* Plaie propre et sèche.",
            "m.new_content": {"msgtype": "m.text", "body": "Plaie propre et sèche."},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$m1"},
        },
    }
    await world.store.store_transaction("t-edit", [edit])
    row = next(r for r in await world.store.rows(Outbox, ["pending"]) if r.event_id == "$m1-edit")
    assert (await _handle(world, row)).state == RowState.DONE
    corrected = read_header(parse_xml(_document_of(_last_mail(world))))
    assert (corrected.version, corrected.set_id) == (2, first.set_id)
    assert corrected.replaces == first.document_id
    assert corrected.document_id == InstanceId(document_root("$m1-edit"))


def _last_mail(world: World) -> EmailMessage:
    mail = email.message_from_bytes(world.submitted[-1], policy=default)
    assert isinstance(mail, EmailMessage)
    return mail
