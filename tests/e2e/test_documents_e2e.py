"""Health documents via the real servers: IHE_XDM.ZIP received, a broken one, ``!mss export``."""

from __future__ import annotations

import asyncio
import io
import secrets
import zipfile
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import body_contains, mails_matching, open_portal, text_of, wait_ghost_events

from mssbridge.cda.document import build_cda, parse_xml, read_header
from mssbridge.cda.sample import sample_request, sample_submission
from mssbridge.cda.transcript import find_fonts, render_transcript
from mssbridge.cda.xdm import build_xdm
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

NIL = "MSSBRIDGE-LAB"
INS = "280017505600150"  # the sample patient's (test INS)


def _document_of(mail: EmailMessage) -> bytes:
    files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
    with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as archive:
        return archive.read("IHE_XDM/SUBSET01/DOC0001.XML")


async def test_documents_in_and_out(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory(
        extra=(
            f'access.patient_context=["@alice:{SERVER_NAME}"]',
            f"mssante.nil={NIL}",
            "mssante.name=CH du Lab",
            "mssante.finess=2A0000001",
            "mssante.ins_root=1.2.250.1.213.1.4.10",
        )
    )
    bridge.start()
    _, token = synapse_lab.make_user("alice")
    tag = secrets.token_hex(4)
    request = sample_request(3)
    pdf = render_transcript(request, find_fonts())
    package = build_xdm([build_cda(request, pdf)], sample_submission(request))
    async with LabMatrixUser(synapse_lab.url, token) as alice:
        room = await open_portal(alice, f"Dossier {tag}")
        await alice.send_text(room, f"Bonjour {tag}, le compte rendu ?")
        [first] = await mails_matching(world, lambda m: f"Bonjour {tag}" in text_of(m), 1)
        thread = str(first["Message-ID"])

        # A package built by the project's own builder: summary and PDF in the room.
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Re: {first['Subject']}",
            f"Voici le CR {tag}.",
            in_reply_to=thread,
            attachments=[("IHE_XDM.ZIP", "application/zip", package)],
        )
        [summary] = await wait_ghost_events(alice, room, body_contains("Document de santé"), 1)
        body = summary["content"]["body"]
        assert "CR ou fiche de consultation ou de visite" in body
        assert "TEST-ÉCHANGE Jeanne Hélène" in body and INS in body
        [posted] = await wait_ghost_events(alice, room, body_contains("01_CR_ou_fiche"), 1)
        assert posted["content"]["msgtype"] == "m.file"
        assert await alice.download(posted["content"]["url"]) == pdf

        # A broken package: a notice, and the mail with its archive all the same.
        broken = package[: len(package) // 2]
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Re: {first['Subject']}",
            f"Archive abîmée {tag}.",
            in_reply_to=thread,
            attachments=[("IHE_XDM.ZIP", "application/zip", broken)],
        )
        [notice] = await wait_ghost_events(alice, room, body_contains("non importée"), 1)
        assert notice["content"]["msgtype"] == "m.notice"
        await wait_ghost_events(alice, room, body_contains(f"Archive abîmée {tag}"), 1)
        zips = await wait_ghost_events(alice, room, body_contains("IHE_XDM.ZIP"), 4)
        files = [e for e in zips if e["content"].get("msgtype") == "m.file"]
        assert broken in [await alice.download(e["content"]["url"]) for e in files]

        # The thread as one document, twice: versions 1 and 2 of one set.
        await alice.send_text(
            room,
            f'!mss patient ins={INS} nom=Test-Échange prenoms="Jeanne Hélène" '
            "naissance=1980-01-01 sexe=F lieu=75056 qualifiee=oui",
        )
        await alice.wait_for_event(room, body_contains("(IHE_XDM.ZIP et PDF)"), timeout=30)
        mine: list[EmailMessage] = []
        for count in (1, 2):
            await alice.send_text(room, "!mss export")
            mine = await mails_matching(
                world,
                lambda m: (
                    "Transcription de la conversation" in text_of(m)
                    and thread in str(m["References"])
                ),
                count,
            )
            said = body_contains(f"version {count} du document")
            await alice.wait_for_event(room, said, timeout=30)
        assert len(mine) == 2
        v1, v2 = (read_header(parse_xml(_document_of(m))) for m in mine)
        assert (v1.version, v2.version) == (1, 2)
        assert v1.set_id == v2.set_id and v2.replaces == v1.document_id
        assert str(mine[1]["Subject"]).startswith("XDM/1.0/DDM+")
        assert mine[1]["X-MSS-NIL"] == NIL and mine[1]["X-MSS-CODECDA"] == "11488-4"
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    for secret in (tag, INS, "Jeanne", "ÉCHANGE", "ECHANGE"):
        assert secret not in log, secret
