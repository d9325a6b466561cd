"""``mssbridge demo``: the whole relay on loopback, narrated, with embedded defaults."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from mssbridge import config as config_module
from mssbridge.cda.xdm import ZIP_NAME, read_xdm
from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.bridge_process import BridgeProcess
from mssbridge.lab.correspondent import Correspondent
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.pki import TestPki, generate_test_pki
from mssbridge.lab.synapse import SynapseLab, free_port
from mssbridge.lab.world import (
    BRIDGE_MAILBOX,
    CLIENT_NAMES,
    CORRESPONDENT,
    MAIL_DOMAINS,
    SERVER_NAME,
    write_bridge_config,
)
from mssbridge.provisioning import registration_yaml

Say = Callable[[str], None]

DEMO_USER = "alice"
# A made-up test patient: the INS is a test number (the lab's INS authority is the test one).
DEMO_PATIENT_NAME = "TEST-DÉMO"
DEMO_PATIENT_COMMAND = (
    f'!mss patient ins=280017505600150 nom={DEMO_PATIENT_NAME} prenoms="Jeanne Hélène" '
    "naissance=1980-01-01 sexe=F lieu=75056 qualifiee=oui"
)


@dataclass
class RunningLab:
    """Everything the loopback lab runs, once started."""

    directory: Path
    pki: TestPki
    mail: MailLab
    synapse: SynapseLab
    bridge: BridgeProcess
    correspondent: Correspondent


@contextlib.contextmanager
def running_lab(directory: Path, say: Say = print) -> Iterator[RunningLab]:
    """Wipe ``directory``, start PKI, mail servers, Synapse and the bridge; stop them after."""
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    say(f"1. Test PKI mimicking IGC-Santé in {directory / 'pki'}")
    pki = generate_test_pki(directory / "pki", client_names=CLIENT_NAMES)
    mail = MailLab(directory / "mail", pki, MAIL_DOMAINS, secrets.token_urlsafe(12))
    say("2. Postfix (STARTTLS, client certificate required) and Dovecot (IMAP, mutual TLS)")
    with mail:
        as_token, hs_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        synapse_port, appservice_port = free_port(), free_port()
        config = write_bridge_config(
            directory / "bridge" / "config.toml",
            pki,
            mail,
            homeserver_url=f"http://127.0.0.1:{synapse_port}",
            as_token=as_token,
            hs_token=hs_token,
            appservice_port=appservice_port,
            documents=True,
            extra=(f'access.patient_context=["@{DEMO_USER}:{SERVER_NAME}"]',),
        )
        registration = directory / "bridge" / "registration.yaml"
        registration.write_text(registration_yaml(config_module.load(config)))
        say(f"3. Bridge config written by `mssbridge init`: {config}")
        say("   with a test whitelist of the lab domains, signed by the test PKI and imported,")
        say("   and the lab hospital's MSSanté identity for health documents (NIL, FINESS)")
        say(f"4. Synapse homeserver '{SERVER_NAME}' with the bridge's registration")
        with SynapseLab(
            directory / "synapse",
            server_name=SERVER_NAME,
            port=synapse_port,
            appservice_files=[registration],
        ) as synapse:
            bridge = BridgeProcess(config, appservice_port, directory / "bridge" / "bridge.log")
            say("5. `mssbridge run` started (log: bridge/bridge.log)")
            bridge.start()
            try:
                yield RunningLab(
                    directory,
                    pki,
                    mail,
                    synapse,
                    bridge,
                    Correspondent(
                        CORRESPONDENT, mail, pki.client(CORRESPONDENT), name="Dr Gregory House"
                    ),
                )
            finally:
                bridge.stop()


def run_demo(directory: Path, say: Say = print) -> None:
    """Build the lab in ``directory``, relay a conversation both ways, then stop everything."""
    started = time.monotonic()
    with running_lab(directory, say) as lab:
        _, token = lab.synapse.register_user(DEMO_USER, "alice-demo-password")
        asyncio.run(_conversation(lab.synapse.url, token, lab.correspondent, say))
    say(
        f"Done in {time.monotonic() - started:.0f} s: every server stopped. "
        "Re-run `mssbridge demo` to see it again."
    )


def _size(data: bytes) -> str:
    return f"{len(data)} B" if len(data) < 1024 else f"{len(data) / 1024:.1f} kB"


def _show_mail(mail: EmailMessage, say: Say) -> None:
    """What the correspondent's mail client shows: headers, attachments, the CDA package."""
    say(f"   From: {mail['From']}")
    say(f"   Subject: {mail['Subject']}")
    say(f"   Message-ID: {mail['Message-ID']}  In-Reply-To: {mail['In-Reply-To'] or '-'}")
    mss = [f"{name}: {value}" for name, value in mail.items() if name.upper().startswith("X-MSS")]
    if mss:
        say("   " + "  ".join(mss))
    for part in mail.iter_attachments():
        data = part.get_content()
        data = data if isinstance(data, bytes) else str(data).encode()
        say(f"   attachment {part.get_filename()} ({part.get_content_type()}, {_size(data)})")
        if part.get_filename() == ZIP_NAME:
            # Read back as a receiving MSSanté client would: metadata, then the documents.
            package = read_xdm(data)
            for document in package.documents:
                kind = document.mime_type
                if document.cda is not None:
                    embedded = f", PDF embedded ({_size(document.pdf)})" if document.pdf else ""
                    kind = f"CDA R2 « {document.title} » about {document.cda.patient_family}"
                    kind += embedded
                say(f"     in the archive: {document.path}: {kind}")


async def _wait(check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.3)
    raise TimeoutError("the demo timed out; see bridge/bridge.log")


async def _conversation(url: str, token: str, house: Correspondent, say: Say) -> None:
    ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
    async with LabMatrixUser(url, token) as alice:
        await alice.set_display_name("Dr Alice Martin")
        room = await alice.create_room(invite=[ghost], name="Avis cardiologique")
        say(f"6. Alice (Matrix) invites {ghost}: the room now talks to {CORRESPONDENT}")
        await alice.wait_for_event(
            room,
            lambda e: (
                e.get("state_key") == ghost and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=30,
        )
        await alice.send_text(room, DEMO_PATIENT_COMMAND)
        notice = await alice.wait_for_event(
            room,
            lambda e: (
                (e.get("content") or {}).get("msgtype") == "m.notice"
                and DEMO_PATIENT_NAME in str((e.get("content") or {}).get("body", ""))
            ),
            timeout=30,
        )
        say(f"7. Alice sets the patient context (a made-up test patient): {DEMO_PATIENT_COMMAND}")
        say("   The bridge answers in the room:")
        for line in str(notice["content"]["body"]).splitlines():
            say(f"   | {line}")
        await alice.send_text(room, "Bonjour, pouvez-vous relire l'ECG de Mme D. ?")
        await alice.send_file(room, "ECG.pdf", b"%PDF-1.4\n% ECG de test\n", "application/pdf")

        async def arrived() -> list[EmailMessage]:
            inbox = await asyncio.to_thread(house.inbox)
            return inbox if len(inbox) >= 2 else []

        mails = await _wait(arrived)
        say("8. Dr House's MSSanté mailbox received two mails, each with its health document")
        say("   (CDA R2 in IHE_XDM.ZIP, and the same transcript as PDF):")
        for number, mail in enumerate(mails, 1):
            say(f"   -- mail {number}")
            _show_mail(mail, say)
        await asyncio.to_thread(
            house.send,
            BRIDGE_MAILBOX,
            f"Re: {mails[-1]['Subject']}",
            "ECG vu : rien d'alarmant, je la reçois jeudi.\n\n"
            "Le 22/11/2026, Dr Alice Martin a écrit :\n> Bonjour, pouvez-vous relire l'ECG ?\n",
            in_reply_to=str(mails[-1]["Message-ID"]),
            attachments=[("compte-rendu.txt", "text/plain", b"Compte rendu : RAS.\n")],
        )
        say("9. Dr House replies from his mail client (quoted history, one attachment)")

        async def replied() -> list[dict[str, Any]]:
            events = [
                e
                for e in await alice.messages(room, 50)
                if e.get("sender") == ghost and e.get("type") == "m.room.message"
            ]
            return events if len(events) >= 2 else []

        events = await _wait(replied)
        say("10. In the Matrix room, as the ghost of Dr House:")
        for event in reversed(events):
            content = event.get("content") or {}
            say(f"   [{content.get('msgtype')}] {content.get('body')}")
