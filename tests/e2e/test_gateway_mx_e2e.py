"""Gateway mode in MX mode, end to end: Matrix → the daemon → the MX the lab DNS names → back."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World

from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.dns_server import LabDnsServer, Zone
from mssbridge.lab.mailserver import free_port
from mssbridge.lab.matrix_client import LabMatrixUser, text_body
from mssbridge.lab.operator_mta import OperatorMta
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME
from mssbridge.mail.dkim import DkimStatus, DkimVerifier, generate_key

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CHAT_DOMAIN = "chat.chu-test.mssante.fr"
PEER_DOMAIN = CORRESPONDENT.partition("@")[2]
SELECTOR = "e2emx"
GHOST = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
# Generous: the CI machine runs other suites at the same time.
TIMEOUT = 120.0


@contextlib.contextmanager
def lab_dns(zone: Zone) -> Iterator[LabDnsServer]:
    """The lab DNS server in a thread of its own: it answers whatever the test awaits."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="lab-dns", daemon=True)
    thread.start()
    server = LabDnsServer(zone)
    try:
        asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(10)
        yield server
    finally:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _copies(world: World, message_id: str) -> list[bytes]:
    """Every copy of ``message_id`` the correspondent's server stored (its maildir)."""
    maildir = world.mail.maildir(CORRESPONDENT)
    found = [p.read_bytes() for p in [*maildir.glob("new/*"), *maildir.glob("cur/*")]]
    return [data for data in found if f"Message-ID: {message_id}".encode() in data]


async def _mail_with(world: World, token: str) -> EmailMessage:
    """The first mail of the correspondent's mailbox whose text carries ``token``."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for mail in await asyncio.to_thread(world.correspondent.inbox):
            part = mail.get_body(("plain",))
            if part is not None and token in str(part.get_content()):
                return mail
        await asyncio.sleep(0.5)
    raise AssertionError(f"no mail with {token} in {TIMEOUT} s\n{world.mail.logs()}")


async def _portal(user: LabMatrixUser, name: str) -> str:
    """A room of ``user`` with the correspondent's ghost, once the ghost has joined."""
    room = await user.create_room(invite=[GHOST], name=name)
    await user.wait_for_event(
        room,
        lambda e: (
            e.get("state_key") == GHOST and (e.get("content") or {}).get("membership") == "join"
        ),
        timeout=TIMEOUT,
    )
    return room


def _mx_settings(world: World, dns: LabDnsServer, gateway_port: int, dkim: Path) -> tuple[str, ...]:
    """Gateway mode sending to MX hosts, asking the lab DNS server, MX on the lab's port."""
    pki = world.pki
    return (
        "gateway.enabled=true",
        f"gateway.domain={CHAT_DOMAIN}",
        f'gateway.listen=["127.0.0.1:{gateway_port}"]',
        f"gateway.cert_file={pki.server.chain}",
        f"gateway.key_file={pki.server.key}",
        f'tls.crl_files=["{pki.root_crl}", "{pki.intermediate_crl}"]',
        "gateway.outbound=mx",
        f'gateway.nameservers=["{dns.host}:{dns.port}"]',
        f"gateway.mx_port={world.mail.smtp_port}",
        f"dkim.key_file={dkim}",
        f"dkim.selector={SELECTOR}",
        "receipts.request_read=false",
    )


async def test_a_message_goes_to_the_mx_and_the_reply_comes_back_through_the_gateway(
    world: World,
    synapse_lab: Any,
    bridge_factory: Callable[..., BridgeProcess],
    tmp_path: Path,
) -> None:
    key_file, record = generate_key(SELECTOR, CHAT_DOMAIN, tmp_path / "dkim")
    # The correspondent's domain has an MX record naming a host on loopback: the lab
    # Postfix, which requires STARTTLS with a client certificate and presents the DN the
    # lab whitelist lists for that domain. The system resolver knows none of these names.
    zone = {
        (PEER_DOMAIN, "MX"): ["10 mx.correspondant.test."],
        ("mx.correspondant.test", "A"): [world.mail.host],
    }
    gateway_port = free_port()
    tag = secrets.token_hex(4)
    localpart = f"iris{tag}"
    _, token = synapse_lab.make_user(localpart)
    with lab_dns(zone) as dns:
        bridge = bridge_factory(extra=_mx_settings(world, dns, gateway_port, key_file))
        bridge.start(timeout=TIMEOUT)
        async with LabMatrixUser(synapse_lab.url, token) as iris:
            await iris.set_display_name("Dr Iris Bernard")
            room = await _portal(iris, tag)
            await iris.send_text(room, f"Bonjour {tag}")
            mail = await _mail_with(world, tag)
            message_id = str(mail["Message-ID"])
            # The correspondent answers from another operator's server, which delivers to
            # the chat domain's gateway with its client certificate.
            operator = OperatorMta(
                tmp_path / "operator", world.pki, world.pki.server, gateway_port, (PEER_DOMAIN,)
            )
            with operator:
                queue_id = await asyncio.to_thread(
                    operator.send,
                    CORRESPONDENT,
                    [f"{localpart}@{CHAT_DOMAIN}"],
                    f"Re: {tag}",
                    f"Réponse {tag}, bien reçu",
                    message_id,
                )
                delivery = await asyncio.to_thread(operator.wait_delivery, queue_id, TIMEOUT)
                assert delivery.status == "sent", delivery.detail
            reply = await iris.wait_for_event(
                room, lambda e: f"Réponse {tag}" in (text_body(e) or ""), timeout=TIMEOUT
            )
        assert bridge.stop() == 0
    # Stopped: no worker can deliver a second copy any more.
    copies = _copies(world, message_id)
    assert len(copies) == 1, f"{len(copies)} copies of {message_id}"
    assert str(mail["From"]) == f"Dr Iris Bernard <{localpart}@{CHAT_DOMAIN}>"
    assert str(mail["Return-Path"]) == f"<{BRIDGE_MAILBOX}>"
    verdict = DkimVerifier.from_keys({f"{CHAT_DOMAIN}/{SELECTOR}": record}).verify(copies[0])
    assert (verdict.status, verdict.domain) == (DkimStatus.PASS, CHAT_DOMAIN)
    assert reply["sender"] == GHOST
    log = bridge.log.read_text()
    assert log.count(f": {PEER_DOMAIN} took it") == 1
    assert "stored as inbox row" in log
    assert f"Bonjour {tag}" not in log and f"Réponse {tag}" not in log
