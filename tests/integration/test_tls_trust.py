"""The MSSanté trust space against real Postfix and Dovecot: who is refused, why, and reloads.

Every path (SMTP submission with STARTTLS, IMAP with STARTTLS, IMAPS) is tried both ways:
the servers refusing our bad client certificates, and our client refusing servers that
present a bad certificate (extra labs started with that certificate as the server's).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid
from pathlib import Path

import pytest

from mssbridge.config import MailboxSection, Settings, TlsSection
from mssbridge.daemon import Daemon
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import DEFAULT_CLIENT_NAMES, CertFiles, TestPki
from mssbridge.mail import smtp_out
from mssbridge.mail.imap import ImapMailbox
from mssbridge.security.tls import TlsContexts, TlsRefused, client_context

pytestmark = pytest.mark.integration

MAILBOX = DEFAULT_CLIENT_NAMES[0]
OTHER_CN = DEFAULT_CLIENT_NAMES[1]
SENDER = "emetteur@correspondant.mssante.fr"
PASSWORD = "lab-password"
PATHS = ("smtp", "imap-starttls", "imaps")

MailboxFactory = Callable[..., MailboxSection]
TlsFactory = Callable[..., TlsSection]


async def _connect(mailbox: MailboxSection, context: ssl.SSLContext, path: str) -> None:
    """Open one authenticated session on ``path`` and close it; raise what the adapter raises."""
    if path == "smtp":
        await smtp_out.probe(mailbox, context, PASSWORD)
        return
    session = ImapMailbox(mailbox, context, PASSWORD)
    await session.connect()
    await session.close()


def _mailbox_for(lab_mailbox: MailboxFactory, path: str) -> MailboxSection:
    return lab_mailbox(MAILBOX, imap_security="tls" if path == "imaps" else "starttls")


# -- the servers refuse our bad client certificates --------------------------------------


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("which", ["rogue_client", "expired_client", "revoked_client"])
async def test_servers_refuse_bad_client_certificates(
    lab_mailbox: MailboxFactory,
    lab_tls: TlsFactory,
    test_pki: TestPki,
    mail_lab: MailLab,
    which: str,
    path: str,
) -> None:
    context = client_context(lab_tls(getattr(test_pki, which)))
    mailbox = _mailbox_for(lab_mailbox, path)
    if path == "smtp" and which == "revoked_client":
        # Postfix has no CRL support (smtpd_tls_CAfile holds certificates only): it accepts
        # a revoked certificate. An MSSanté operator must check revocation another way
        # (Dovecot, an OCSP/CRL-aware proxy); this test keeps the limitation visible.
        await _connect(mailbox, context, path)
        return
    with pytest.raises(TlsRefused, match="client certificate"):
        await _connect(mailbox, context, path)


async def test_postfix_log_names_why_it_refused(
    lab_mailbox: MailboxFactory, lab_tls: TlsFactory, test_pki: TestPki, mail_lab: MailLab
) -> None:
    for which, reason in (
        ("rogue_client", "untrusted issuer"),
        ("expired_client", "certificate has expired"),
    ):
        context = client_context(lab_tls(getattr(test_pki, which)))
        with pytest.raises(TlsRefused):
            await _connect(_mailbox_for(lab_mailbox, "smtp"), context, "smtp")
        await _wait_for_log(mail_lab.postfix_log, reason)


async def _wait_for_log(log: Path, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} not in {log}"
        await asyncio.sleep(0.05)


# -- our client refuses bad server certificates ------------------------------------------

BAD_SERVERS = {
    "rogue_server": "unknown CA",
    "expired_server": "certificate has expired",
    "not_yet_valid_server": "certificate not yet valid",
    "revoked_server": "certificate revoked",
    "other_host_server": "hostname mismatch",
}


@pytest.fixture(scope="module", params=sorted(BAD_SERVERS))
def bad_lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, test_pki: TestPki
) -> Iterator[tuple[str, MailLab]]:
    """A second lab whose Postfix and Dovecot present one of the bad server certificates."""
    which: str = request.param
    pki = dataclasses.replace(test_pki, server=getattr(test_pki, which))
    lab = MailLab(tmp_path_factory.mktemp(which), pki, ("chu-test.mssante.fr",), PASSWORD)
    with lab:
        yield which, lab


def _on(lab: MailLab, mailbox: MailboxSection, path: str, host: str) -> MailboxSection:
    imap_port = lab.imaps_port if path == "imaps" else lab.imap_port
    return mailbox.model_copy(
        update={
            "smtp": mailbox.smtp.model_copy(update={"host": host, "port": lab.smtp_port}),
            "imap": mailbox.imap.model_copy(update={"host": host, "port": imap_port}),
        }
    )


def _with_crls(tls: TlsSection, pki: TestPki) -> TlsSection:
    return tls.model_copy(update={"crl_files": (pki.root_crl, pki.intermediate_crl)})


@pytest.mark.parametrize("path", PATHS)
async def test_client_refuses_bad_server_certificate_with_reason(
    bad_lab: tuple[str, MailLab],
    lab_mailbox: MailboxFactory,
    lab_tls: TlsFactory,
    test_pki: TestPki,
    path: str,
) -> None:
    which, lab = bad_lab
    # "localhost" resolves to the lab's 127.0.0.1 and is in the SAN of every bad
    # certificate but the one made for another host.
    mailbox = _on(lab, _mailbox_for(lab_mailbox, path), path, "localhost")
    context = client_context(_with_crls(lab_tls(), test_pki))
    with pytest.raises(TlsRefused) as refused:
        await _connect(mailbox, context, path)
    message = str(refused.value)
    assert "server certificate is not trusted" in message
    assert BAD_SERVERS[which] in message, message
    if which == "revoked_server":
        # Control: the refusal comes from tls.crl_files, in either check mode.
        await _connect(mailbox, client_context(lab_tls()), path)
        only_issuer = lab_tls().model_copy(update={"crl_files": (test_pki.intermediate_crl,)})
        with pytest.raises(TlsRefused, match="certificate revoked"):
            await _connect(mailbox, client_context(only_issuer), path)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("mode", ["leaf", "chain"])
async def test_valid_server_is_accepted_with_crls(
    lab_mailbox: MailboxFactory,
    lab_tls: TlsFactory,
    test_pki: TestPki,
    mail_lab: MailLab,
    mode: str,
    path: str,
) -> None:
    crls = (
        (test_pki.intermediate_crl,)
        if mode == "leaf"
        else (
            test_pki.root_crl,
            test_pki.intermediate_crl,
        )
    )
    context = client_context(lab_tls().model_copy(update={"crl_files": crls}))
    expected = ssl.VERIFY_CRL_CHECK_LEAF if mode == "leaf" else ssl.VERIFY_CRL_CHECK_CHAIN
    assert context.verify_flags & expected
    await _connect(_mailbox_for(lab_mailbox, path), context, path)


# -- protocol versions -------------------------------------------------------------------


def _openssl(args: list[str], pki: TestPki) -> subprocess.CompletedProcess[str]:
    client = pki.client(MAILBOX)
    return subprocess.run(
        [
            "openssl",
            "s_client",
            *args,
            "-cert",
            str(client.chain),
            "-key",
            str(client.key),
            "-CAfile",
            str(pki.ca_bundle),
            "-verify_return_error",
            "-brief",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )


@pytest.mark.parametrize("path", PATHS)
def test_lab_servers_refuse_tls_1_0_and_1_1(
    mail_lab: MailLab, test_pki: TestPki, path: str
) -> None:
    target = {
        "smtp": ["-starttls", "smtp", "-connect", f"127.0.0.1:{mail_lab.smtp_port}"],
        "imap-starttls": ["-starttls", "imap", "-connect", f"127.0.0.1:{mail_lab.imap_port}"],
        "imaps": ["-connect", f"127.0.0.1:{mail_lab.imaps_port}"],
    }[path]
    # SECLEVEL=0 lets this OpenSSL offer the old versions at all: the refusal is the server's.
    for version in ("-tls1", "-tls1_1"):
        old = _openssl([version, "-cipher", "DEFAULT@SECLEVEL=0", *target], test_pki)
        assert old.returncode != 0, old.stderr
        assert "Protocol version:" not in old.stderr
    current = _openssl(["-tls1_2", *target], test_pki)
    assert current.returncode == 0, current.stderr
    assert "Protocol version: TLSv1.2" in current.stderr


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_our_client_refuses_servers_offering_only_old_tls(
    lab_tls: TlsFactory, test_pki: TestPki, version: ssl.TLSVersion
) -> None:
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = server.maximum_version = version
    server.set_ciphers("DEFAULT:@SECLEVEL=0")
    server.load_cert_chain(test_pki.server.chain, test_pki.server.key)
    ours = client_context(lab_tls())
    assert ours.minimum_version == ssl.TLSVersion.TLSv1_2
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    permissive.load_verify_locations(test_pki.ca_bundle)
    # The control proves the server really speaks the old version on this OpenSSL.
    assert _handshake_version(permissive, server) == version.name.replace("v1_", "v1.")
    with pytest.raises(ssl.SSLError) as refused:
        _handshake_version(ours, server)
    assert "PROTOCOL" in (refused.value.reason or "").upper(), refused.value


def _handshake_version(client: ssl.SSLContext, server: ssl.SSLContext) -> str:
    """Handshake over a real loopback socket; the negotiated version or the client's error."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with (
                conn,
                server.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as s,
                contextlib.suppress(ssl.SSLError, OSError),
            ):
                s.do_handshake()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                return str(tls.version())
        finally:
            thread.join(5)


# -- reload on SIGHUP --------------------------------------------------------------------


def _install(files: CertFiles, cert: Path, key: Path) -> None:
    """Replace the configured files the way an operator would (new file, then rename)."""
    for source, target in ((files.chain, cert), (files.key, key)):
        staging = target.with_suffix(".new")
        shutil.copyfile(source, staging)
        os.replace(staging, target)


def _probe_message() -> bytes:
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = SENDER
    message["To"] = MAILBOX
    message["Subject"] = "reload"
    message["Date"] = formatdate()
    message["Message-ID"] = make_msgid(domain="chu-test.mssante.fr")
    message.set_content("ping\n")
    return message.as_bytes()


async def _client_cn_of_next_mail(
    mailbox: MailboxSection, tls: TlsContexts, reader_context: ssl.SSLContext
) -> str:
    """Submit with ``tls.client``; the CN Postfix saw, read back from the Received header."""
    reader = ImapMailbox(mailbox, reader_context, PASSWORD)
    await reader.connect()
    try:
        await reader.select()
        before = await reader.new_messages(0)
        last = before[-1][0] if before else 0
        message = _probe_message()
        await smtp_out.submit(
            mailbox, tls.client, PASSWORD, sender=SENDER, recipients=[MAILBOX], message=message
        )
        deadline = time.monotonic() + 10
        while True:
            for uid, _size in await reader.new_messages(last):
                raw = await reader.fetch(uid)
                if raw.endswith(message):
                    return raw.split(b'Client CN "', 1)[1].split(b'"', 1)[0].decode()
            assert time.monotonic() < deadline, "mail not delivered"
            await asyncio.sleep(0.05)
    finally:
        await reader.close()


async def test_reload_takes_new_certificates_for_next_connections_only(
    tmp_path: Path,
    lab_mailbox: MailboxFactory,
    lab_tls: TlsFactory,
    test_pki: TestPki,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cert, key = tmp_path / "organisation.pem", tmp_path / "organisation.key"
    _install(test_pki.client(MAILBOX), cert, key)
    tls = TlsContexts(
        TlsSection(
            ca_file=test_pki.ca_bundle,
            cert_file=cert,
            key_file=key,
            crl_files=(test_pki.intermediate_crl,),
        )
    )
    mailbox = lab_mailbox(MAILBOX)
    reader_context = client_context(lab_tls())
    assert await _client_cn_of_next_mail(mailbox, tls, reader_context) == MAILBOX

    # A session open before the reload keeps working with the context it started with.
    in_flight = ImapMailbox(mailbox, tls.client, PASSWORD)
    await in_flight.connect()
    await in_flight.select()
    _install(test_pki.client(OTHER_CN), cert, key)
    assert tls.reload() and tls.generation == 1
    await in_flight.new_messages(0)
    await in_flight.close()
    assert await _client_cn_of_next_mail(mailbox, tls, reader_context) == OTHER_CN

    # Broken or expired files are refused: the context in use stays, and the log says why.
    in_use = tls.client
    key.write_text("not a key\n")
    assert not tls.reload()
    _install(test_pki.expired_client, cert, key)
    assert not tls.reload()
    assert tls.client is in_use and tls.generation == 1
    refusals = [r.getMessage() for r in caplog.records if "reload refused" in r.getMessage()]
    assert len(refusals) == 2 and "expired" in refusals[1], refusals
    assert await _client_cn_of_next_mail(mailbox, tls, reader_context) == OTHER_CN


async def test_sighup_reloads_the_daemon_certificates(tmp_path: Path, test_pki: TestPki) -> None:
    cert, key = tmp_path / "organisation.pem", tmp_path / "organisation.key"
    _install(test_pki.client(MAILBOX), cert, key)
    settings = Settings.model_validate(
        {
            "matrix": {
                "homeserver_url": "http://127.0.0.1:1",
                "server_name": "hospital.test",
                "as_token": "a",
                "hs_token": "h",
            },
            "tls": {
                "ca_file": str(test_pki.ca_bundle),
                "cert_file": str(cert),
                "key_file": str(key),
            },
            "mailbox": {
                "address": MAILBOX,
                "smtp": {"host": "127.0.0.1"},
                "imap": {"host": "127.0.0.1"},
            },
        }
    )
    daemon = Daemon(settings)
    daemon.tls = TlsContexts(settings.tls)
    loop = asyncio.get_running_loop()
    daemon.install_signal_handlers()
    try:
        _install(test_pki.client(OTHER_CN), cert, key)
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            if daemon.tls.generation:
                break
            await asyncio.sleep(0.01)
        assert daemon.tls.generation == 1
    finally:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
