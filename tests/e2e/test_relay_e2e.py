"""The daemon as a process, driven only as users would: Matrix client API, SMTP and IMAP."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sys
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

GHOST = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)


async def mails_matching(
    world: World, predicate: Callable[[EmailMessage], bool], count: int, timeout: float = 60
) -> list[EmailMessage]:
    """Wait until the correspondent's mailbox holds ``count`` mails matching ``predicate``."""
    deadline = time.monotonic() + timeout
    found: list[EmailMessage] = []
    while time.monotonic() < deadline:
        found = [m for m in await asyncio.to_thread(world.correspondent.inbox) if predicate(m)]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{len(found)} of {count} mails arrived in {timeout} s")


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def mentions(token: str) -> Callable[[EmailMessage], bool]:
    return lambda mail: token in text_of(mail)


async def ghost_events(
    user: LabMatrixUser, room: str, predicate: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    events = await user.messages(room, limit=200)
    return [e for e in events if e.get("sender") == GHOST and predicate(e)]


async def wait_ghost_events(
    user: LabMatrixUser,
    room: str,
    predicate: Callable[[dict[str, Any]], bool],
    count: int,
    timeout: float = 60,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    found: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        found = await ghost_events(user, room, predicate)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.3)
    raise AssertionError(f"{len(found)} of {count} events arrived in {timeout} s")


def body_contains(token: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: token in str((e.get("content") or {}).get("body", ""))


async def open_portal(user: LabMatrixUser, name: str) -> str:
    room = await user.create_room(invite=[GHOST], name=name)
    await user.wait_for_event(
        room,
        lambda e: (
            e.get("type") == "m.room.member"
            and e.get("state_key") == GHOST
            and (e.get("content") or {}).get("membership") == "join"
        ),
        timeout=30,
    )
    return room


async def test_conversation_goes_out_and_reply_comes_back(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("alice")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as alice:
        await alice.set_display_name("Dr Alice Martin")
        room = await open_portal(alice, f"Avis cardio {tag}")
        await alice.send_text(room, f"Bonjour {tag}, pouvez-vous revoir l'ECG ?")
        await alice.send_text(
            room,
            f"Urgent {tag} : FC à 140",
            html=f"<b>Urgent</b> {tag} : FC à 140<script>x</script>",
        )
        ecg = b"%PDF-1.4\n" + secrets.token_bytes(20_000)
        await alice.send_file(room, f"ECG-{tag}.pdf", ecg, "application/pdf")
        await alice.send_text(room, f"Merci {tag}")

        mails = await mails_matching(
            world,
            lambda m: (
                tag in str(m["Subject"])
                or tag in text_of(m)
                or any(tag in (p.get_filename() or "") for p in m.iter_attachments())
            ),
            4,
        )
        assert len(mails) == 4
        ids = [str(m["Message-ID"]) for m in mails]
        assert len(set(ids)) == 4
        for mail in mails:
            assert BRIDGE_MAILBOX in str(mail["From"])
            assert "Dr Alice Martin" in str(mail["From"])
            assert str(mail["To"]).endswith(CORRESPONDENT)
        # threading: each mail answers the previous one, all share the thread root
        for previous, mail in itertools.pairwise(mails):
            assert str(mail["In-Reply-To"]) == str(previous["Message-ID"])
            assert ids[0] in str(mail["References"])
        html = mails[1].get_body(preferencelist=("html",))
        assert html is not None
        assert "<b>Urgent</b>" in str(html.get_content())
        assert "<script>" not in str(html.get_content())
        attached = [p for p in mails[2].iter_attachments() if p.get_filename() == f"ECG-{tag}.pdf"]
        assert len(attached) == 1 and attached[0].get_content() == ecg

        report = b"Compte rendu " + tag.encode() + b"\n" + b"x" * 3000
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Re: {mails[-1]['Subject']}",
            f"Vu {tag}, je la reçois demain.\n\nLe 22/11/2026, Dr Alice Martin a écrit :\n"
            f"> Merci {tag}\n",
            in_reply_to=ids[-1],
            references=ids[:1],
            attachments=[(f"CR-{tag}.txt", "text/plain", report)],
        )
        texts = await wait_ghost_events(alice, room, body_contains(f"Vu {tag}"), 1)
        body = texts[0]["content"]["body"]
        assert "je la reçois demain" in body
        assert "a écrit" not in body and f"> Merci {tag}" not in body
        files = await wait_ghost_events(alice, room, body_contains(f"CR-{tag}.txt"), 1)
        assert files[0]["content"]["msgtype"] == "m.file"
        assert await alice.download(files[0]["content"]["url"]) == report
        members = await alice.joined_members(room)
        assert "Dr Gregory House" in members[GHOST]["display_name"]
    assert bridge.stop() == 0
    # nothing that was written, not even the subject, reaches the log
    assert tag not in bridge.log.read_text()


async def test_unknown_command_gets_help_and_start_opens_a_portal(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("carol")
    async with LabMatrixUser(synapse_lab.url, token) as carol:
        dm = await carol.create_room(invite=[synapse_lab.bot_user_id], is_direct=True)
        await carol.wait_for_event(
            dm,
            lambda e: (
                e.get("sender") == synapse_lab.bot_user_id
                and "!mss start" in str((e.get("content") or {}).get("body", ""))
            ),
            timeout=30,
        )
        await carol.send_text(dm, "!mss frobnicate")
        notice = await carol.wait_for_event(
            dm,
            lambda e: "Commande inconnue" in str((e.get("content") or {}).get("body", "")),
            timeout=30,
        )
        assert notice["content"]["msgtype"] == "m.notice"
        await carol.send_text(dm, f"!mss start {CORRESPONDENT} Demande d'avis")
        portal = await carol.wait_for_invite(timeout=30)
        await carol.join(portal)
        members = await carol.joined_members(portal)
        assert GHOST in members
        tag = secrets.token_hex(4)
        await carol.send_text(portal, f"Question {tag}")
        [mail] = await mails_matching(world, mentions(f"Question {tag}"), 1)
        assert str(mail["Subject"]) == "Demande d'avis"
        await carol.send_text(dm, "!mss start pas-une-adresse@")  # without @: a name
        refused = await carol.wait_for_event(
            dm,
            lambda e: "Adresse refusée" in str((e.get("content") or {}).get("body", "")),
            timeout=30,
        )
        assert refused["sender"] == synapse_lab.bot_user_id


async def test_new_mail_thread_opens_a_room_for_the_routed_users(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bob_id, token = synapse_lab.make_user("bob")
    bridge = bridge_factory(invite=(bob_id,), auth_method="plain", imap_security="tls")
    bridge.start()
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as bob:
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Patiente adressée {tag}",
            f"Bonjour, je vous adresse une patiente {tag}.",
        )
        room = await bob.wait_for_invite(timeout=60)
        await bob.join(room)
        [event] = await wait_ghost_events(bob, room, body_contains(f"patiente {tag}"), 1)
        assert f"Patiente adressée {tag}" in event["content"]["body"]  # subject shown once
        await bob.send_text(room, f"Reçu {tag}")
        [reply] = await mails_matching(world, mentions(f"Reçu {tag}"), 1)
        assert str(reply["Subject"]).startswith("Re: ")
        assert f"Patiente adressée {tag}" in str(reply["Subject"])


async def test_sigkill_while_in_flight_loses_and_duplicates_nothing(
    database_url: str,
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
) -> None:
    bridge = bridge_factory(extra=(f"bridge.database={database_url}",))
    bridge.start()
    _, token = synapse_lab.make_user("dave")
    tag = secrets.token_hex(4)
    count = 12
    async with LabMatrixUser(synapse_lab.url, token) as dave:
        room = await open_portal(dave, f"Crash {tag}")
        for i in range(count):
            await dave.send_text(room, f"Out {tag} #{i}")
            if i == count // 2:
                bridge.kill()  # mid-stream: the rest waits at the homeserver
        bridge.start()
        await mails_matching(world, mentions(f"Out {tag} #"), count)
        await asyncio.sleep(2)  # time for a duplicate to show up, if there were one
        out = await mails_matching(world, mentions(f"Out {tag} #"), count)
        assert sorted(text_of(m).strip() for m in out) == sorted(
            f"Out {tag} #{i}" for i in range(count)
        )
        assert len({str(m["Message-ID"]) for m in out}) == count

        parent = str(out[-1]["Message-ID"])
        for i in range(count):
            await asyncio.to_thread(
                world.correspondent.send,
                BRIDGE_MAILBOX,
                f"Re: Crash {tag}",
                f"In {tag} #{i}",
                in_reply_to=parent,
            )
            if i == count // 2:
                bridge.kill()
            if i == count - 2:
                bridge.start()
        await wait_ghost_events(dave, room, body_contains(f"In {tag} #"), count)
        await asyncio.sleep(2)
        seen = await ghost_events(dave, room, body_contains(f"In {tag} #"))
        numbers = sorted(int(e["content"]["body"].split("#", 1)[1].split()[0]) for e in seen)
        assert numbers == list(range(count))
    assert bridge.stop() == 0


async def test_edits_and_redactions_reach_the_correspondent_sensibly(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("frank")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as frank:
        room = await open_portal(frank, f"Corrections {tag}")
        original = await frank.send_text(room, f"Dose {tag} : 5 mg")
        [first] = await mails_matching(world, mentions(f"Dose {tag} : 5 mg"), 1)
        await frank.send_event(
            room,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": f"* Dose {tag} : 2.5 mg",
                "m.new_content": {"msgtype": "m.text", "body": f"Dose {tag} : 2.5 mg"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": original},
            },
        )
        [edit] = await mails_matching(world, mentions(f"Dose {tag} : 2.5 mg"), 1)
        assert text_of(edit).startswith("[Message modifié] ")
        assert str(edit["In-Reply-To"]) == str(first["Message-ID"])

        await frank.redact(room, original)
        [withdrawn] = await mails_matching(
            world,
            lambda m: (
                "a retiré son message" in text_of(m)
                and str(m["In-Reply-To"]) == str(first["Message-ID"])
            ),
            1,
        )
        assert f"Dose {tag}" not in text_of(withdrawn)  # the withdrawal repeats no content


async def test_refused_recipient_gets_a_room_notice_and_the_room_goes_on(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    _, token = synapse_lab.make_user("gina")
    unknown = ghost_user_id("inconnu@correspondant.mssante.fr", "mss_", SERVER_NAME)
    async with LabMatrixUser(synapse_lab.url, token) as gina:
        room = await gina.create_room(invite=[unknown], name="Adresse inconnue")
        await gina.wait_for_event(
            room,
            lambda e: (
                e.get("state_key") == unknown
                and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=30,
        )
        sent = await gina.send_text(room, "Bonjour ?")
        notice = await gina.wait_for_event(
            room,
            lambda e: (
                e.get("sender") == synapse_lab.bot_user_id
                and "non transmis" in str((e.get("content") or {}).get("body", ""))
            ),
            timeout=30,
        )
        assert "inconnu@correspondant.mssante.fr" in notice["content"]["body"]
        assert notice["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == sent


async def test_unreadable_mail_is_kept_and_listed(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    bridge.start()
    raw = b"From: ;;;\r\nSubject: unusable sender\r\nMessage-ID: <broken@x>\r\n\r\nbody\r\n"
    await asyncio.to_thread(world.correspondent.send_raw, BRIDGE_MAILBOX, raw)
    deadline = time.monotonic() + 30
    listing = ""
    while time.monotonic() < deadline:
        listing = await _queue_list(bridge)
        if "shunted" in listing and "inbox" in listing:
            break
        await asyncio.sleep(0.5)
    assert "unparsable mail" in listing, listing
    assert bridge.process is not None and bridge.process.poll() is None  # still running


async def _queue_list(bridge: BridgeProcess) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mssbridge",
        "queue",
        "list",
        "--config",
        str(bridge.config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    return out.decode()
