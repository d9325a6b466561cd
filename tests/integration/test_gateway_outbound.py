"""Gateway mode, outbound groundwork: MX look-up (lab DNS) and direct delivery to a real Postfix."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import AsyncIterator

import dns.asyncresolver
import pytest
from fixtures.gateway import OTHER_OPERATOR_DN, subject_of

from mssbridge.config import TlsSection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.lab.dns_server import LabDnsServer
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import TestPki
from mssbridge.mail import mx
from mssbridge.mail.mx import MailHost
from mssbridge.mail.smtp_direct import deliver
from mssbridge.mail.smtp_out import Submission
from mssbridge.security.tls import client_context

pytestmark = pytest.mark.integration

DOMAIN = "correspondant.mssante.fr"
RECIPIENT = f"dr.house@{DOMAIN}"
SENDER = "dr.martin@chat.chu-test.mssante.fr"
BRIDGE_CLIENT = "messagerie@chu-test.mssante.fr"
ZONE = {
    (DOMAIN, "MX"): ["20 mx2.correspondant.test.", "10 mx1.correspondant.test."],
    ("mx1.correspondant.test", "A"): ["127.0.0.2"],  # nothing listens there
    ("mx2.correspondant.test", "A"): ["127.0.0.1"],
    ("implicite.test", "A"): ["127.0.0.1"],
    ("sans-courriel.test", "MX"): ["0 ."],
}


def _message(subject: str) -> bytes:
    return (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@chat.chu-test.mssante.fr>\r\n\r\nBonjour\r\n"
    ).encode()


def _context(pki: TestPki, ca_file: object = None) -> ssl.SSLContext:
    client = pki.client(BRIDGE_CLIENT)
    return client_context(
        TlsSection(
            ca_file=ca_file or pki.ca_bundle,
            cert_file=client.chain,
            key_file=client.key,
            check_hostname=False,  # MX names are not in MSSanté certificates: the DN decides
            crl_files=(pki.root_crl, pki.intermediate_crl),
        )
    )


async def test_mx_hosts_by_preference_and_the_special_cases() -> None:
    async with LabDnsServer(ZONE, failing=["panne.test"]) as server:
        resolver = mx.resolver([server.host], server.port, lifetime=2.0)
        assert await mx.mail_hosts(DOMAIN, resolver) == [
            MailHost(10, "mx1.correspondant.test"),
            MailHost(20, "mx2.correspondant.test"),
        ]
        assert await mx.mail_hosts("implicite.test", resolver) == [MailHost(0, "implicite.test")]
        with pytest.raises(Rejected) as null_mx:
            await mx.mail_hosts("sans-courriel.test", resolver)
        assert null_mx.value.code == mx.NULL_MX
        with pytest.raises(Rejected) as missing:
            await mx.mail_hosts("inexistant.test", resolver)
        assert missing.value.code == mx.NO_SUCH_DOMAIN
        with pytest.raises(TemporaryFailure):
            await mx.mail_hosts("panne.test", resolver)


def test_equal_preferences_are_shuffled() -> None:
    records = [(10, "a."), (10, "b."), (5, "c."), (10, "d.")]
    orders = {tuple(h.host for h in mx.order(records, random.Random(seed))) for seed in range(20)}
    assert all(found[0] == "c" for found in orders)
    assert len(orders) > 1


@pytest.fixture
async def lab_dns() -> AsyncIterator[LabDnsServer]:
    async with LabDnsServer(ZONE) as server:
        yield server


def _resolver(server: LabDnsServer) -> dns.asyncresolver.Resolver:
    return mx.resolver([server.host], server.port, lifetime=2.0)


async def _deliver(
    server: LabDnsServer,
    port: int,
    context: ssl.SSLContext,
    listed: list[str],
    recipients: list[str],
    subject: str,
) -> Submission:
    resolver = _resolver(server)
    return await deliver(
        DOMAIN,
        await mx.mail_hosts(DOMAIN, resolver),
        resolver,
        context,
        listed,
        sender=SENDER,
        recipients=recipients,
        message=_message(subject),
        port=port,
        timeout=5.0,
    )


async def test_delivery_skips_a_dead_mx_and_reaches_the_next(
    mail_lab: MailLab, test_pki: TestPki, lab_dns: LabDnsServer
) -> None:
    outcome = await _deliver(
        lab_dns,
        mail_lab.smtp_port,
        _context(test_pki),
        [subject_of(test_pki.server)],
        [RECIPIENT, f"inconnu@{DOMAIN}"],
        "direct1",
    )
    assert outcome.accepted == (RECIPIENT,)
    assert [(r.address, r.code) for r in outcome.refused] == [(f"inconnu@{DOMAIN}", "5.1.1")]
    new = mail_lab.maildir(RECIPIENT) / "new"
    for _ in range(100):
        if new.exists() and any(b"direct1" in f.read_bytes() for f in new.glob("*")):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"not delivered\n{mail_lab.logs()}")


async def test_server_dn_must_be_listed_for_the_domain(
    mail_lab: MailLab, test_pki: TestPki, lab_dns: LabDnsServer
) -> None:
    with pytest.raises(TemporaryFailure, match="not listed for the domain") as raised:
        await _deliver(
            lab_dns, mail_lab.smtp_port, _context(test_pki), [OTHER_OPERATOR_DN], [RECIPIENT], "d2"
        )
    assert "mx1.correspondant.test" in str(raised.value)  # tried first, unreachable


async def test_untrusted_server_certificate_is_skipped(
    mail_lab: MailLab, test_pki: TestPki, lab_dns: LabDnsServer
) -> None:
    context = _context(test_pki, ca_file=test_pki.rogue_ca_cert)
    with pytest.raises(TemporaryFailure, match="TLS refused: unknown CA"):
        await _deliver(
            lab_dns, mail_lab.smtp_port, context, [subject_of(test_pki.server)], [RECIPIENT], "d3"
        )


async def test_a_server_without_starttls_is_never_used(
    test_pki: TestPki, lab_dns: LabDnsServer
) -> None:
    # A plain SMTP server that offers no STARTTLS.
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 plain ESMTP\r\n")
        while line := await reader.readline():
            verb = line[:4].upper()
            writer.write(b"250 plain\r\n" if verb in (b"EHLO", b"HELO") else b"221 bye\r\n")
            await writer.drain()
            if verb not in (b"EHLO", b"HELO"):
                break
        writer.close()

    server = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(TemporaryFailure, match="no STARTTLS offered"):
            await _deliver(
                lab_dns, port, _context(test_pki), [subject_of(test_pki.server)], [RECIPIENT], "d5"
            )
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize(
    ("local_part", "error", "code"),
    [("inconnu", Rejected, "5.1.1"), ("indisponible", TemporaryFailure, None)],
)
async def test_replies_decide_once_a_host_answers(
    mail_lab: MailLab,
    test_pki: TestPki,
    lab_dns: LabDnsServer,
    local_part: str,
    error: type[Exception],
    code: str | None,
) -> None:
    with pytest.raises(error) as raised:
        await _deliver(
            lab_dns,
            mail_lab.smtp_port,
            _context(test_pki),
            [subject_of(test_pki.server)],
            [f"{local_part}@{DOMAIN}"],
            "d4",
        )
    if code is not None:
        assert getattr(raised.value, "code", None) == code
    else:  # the host answered: its 450 decides, no other host is tried
        assert "recipients deferred: 4.2.1" in str(raised.value)
