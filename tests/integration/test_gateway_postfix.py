"""A real Postfix, as another MSSanté operator, delivering to the gateway's SMTP server."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    SERVER_NAME,
    gateway_settings,
    import_peer_whitelist,
)
from sqlmodel import select

from mssbridge.flows.gateway import GatewayService
from mssbridge.lab.mailserver import free_port
from mssbridge.lab.operator_mta import NO_CERTIFICATE_LOCALPART, OperatorMta
from mssbridge.lab.pki import TestPki
from mssbridge.mail import smtp_replies as replies
from mssbridge.store.gateway_repo import recipients_of
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox

pytestmark = pytest.mark.integration

LIMIT = 50_000
UNLISTED_DOMAIN = "inconnu.example"
SECRET = "Compte rendu confidentiel 7781"


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def operator(
    tmp_path_factory: pytest.TempPathFactory, test_pki: TestPki, gateway_port: int
) -> Iterator[OperatorMta]:
    mta = OperatorMta(
        tmp_path_factory.mktemp("operator"),
        test_pki,
        test_pki.client(PEER_CLIENT),
        gateway_port,
        (PEER_DOMAIN, UNLISTED_DOMAIN),
    )
    with mta:
        yield mta


@pytest.fixture
async def gateway(
    tmp_path: Path, test_pki: TestPki, gateway_port: int
) -> AsyncIterator[tuple[GatewayService, Store]]:
    settings = gateway_settings(
        tmp_path,
        test_pki,
        f'gateway.listen=["127.0.0.1:{gateway_port}"]',
        f"limits.max_message_size={LIMIT}",
    )
    async with open_test_store(sqlite_url(tmp_path / "store.db"), tmp_path / "key") as store:
        await import_peer_whitelist(store, test_pki)
        service = GatewayService(settings)
        await service.start(store, lambda: None)
        try:
            yield service, store
        finally:
            await service.stop()


async def _rows(store: Store) -> list[Inbox]:
    async with store.session() as session:
        return list((await session.execute(select(Inbox))).scalars())


async def _deliver(operator: OperatorMta, sender: str, body: str = "Bonjour") -> tuple[str, str]:
    queue_id = await asyncio.to_thread(
        operator.send, sender, [f"alice@{CHAT_DOMAIN}"], "Essai passerelle", body
    )
    delivery = await asyncio.to_thread(operator.wait_delivery, queue_id)
    return delivery.status, delivery.detail


async def test_operator_with_listed_certificate_is_accepted(
    operator: OperatorMta, gateway: tuple[GatewayService, Store]
) -> None:
    _service, store = gateway
    status, detail = await _deliver(operator, f"dr.pair@{PEER_DOMAIN}", SECRET)
    assert status == "sent", detail
    assert "250 2.0.0 OK: stored as" in detail
    rows = await _rows(store)
    assert len(rows) == 1
    assert recipients_of(rows[0]) == (f"@alice:{SERVER_NAME}",)
    raw = store.raw_of(rows[0])
    assert raw.startswith(b"Received: from smtp.operateur-pair.test (127.0.0.1)")
    assert SECRET.encode() in raw
    # Postfix trusted our server certificate and signed with its client certificate.
    established = [
        line
        for line in operator.log.read_text().splitlines()
        if "TLS connection established" in line
    ]
    assert established and "client-signature" in established[-1]
    assert "TLSv1.2" in established[-1] or "TLSv1.3" in established[-1]


async def test_operator_without_certificate_is_refused(
    operator: OperatorMta, gateway: tuple[GatewayService, Store]
) -> None:
    _service, store = gateway
    status, detail = await _deliver(operator, f"{NO_CERTIFICATE_LOCALPART}@{PEER_DOMAIN}")
    assert status == "bounced"
    assert replies.REPLY_CERT_REQUIRED in detail and "MAIL FROM" in detail
    assert await _rows(store) == []


async def test_unlisted_sender_domain_is_refused(
    operator: OperatorMta, gateway: tuple[GatewayService, Store]
) -> None:
    _service, store = gateway
    status, detail = await _deliver(operator, f"dr.x@{UNLISTED_DOMAIN}")
    assert status == "bounced"
    assert replies.REPLY_SENDER_NOT_WHITELISTED in detail
    assert await _rows(store) == []


async def test_mail_over_the_announced_size_is_not_sent(
    operator: OperatorMta, gateway: tuple[GatewayService, Store]
) -> None:
    _service, store = gateway
    status, detail = await _deliver(operator, f"dr.pair@{PEER_DOMAIN}", "x" * LIMIT)
    assert status == "bounced"
    # Postfix reads SIZE in our EHLO and does not even try to send it.
    assert f"exceeds size limit {LIMIT}" in detail
    assert await _rows(store) == []


TESTSSL = shutil.which("testssl") or shutil.which("testssl.sh")


async def test_testssl_finds_only_strong_tls(
    gateway: tuple[GatewayService, Store], gateway_port: int, tmp_path: Path
) -> None:
    assert TESTSSL is not None, "testssl is missing (bash .ci/setup installs testssl.sh)"
    report = tmp_path / "testssl.json"
    process = await asyncio.create_subprocess_exec(
        TESTSSL,
        "--quiet",
        "--color",
        "0",
        "--protocols",
        "--std",
        "--jsonfile",
        str(report),
        "--starttls",
        "smtp",
        f"127.0.0.1:{gateway_port}",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.wait_for(process.wait(), 300)  # exit code 7 is usual, the JSON decides
    findings = {item["id"]: item["finding"] for item in json.loads(report.read_text())}
    weak = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "cipherlist_NULL", "cipherlist_aNULL")
    weak += ("cipherlist_EXPORT", "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")
    for finding in weak:
        assert findings.get(finding) == "not offered", (finding, findings.get(finding))
    for finding in ("TLS1_2", "TLS1_3", "cipherlist_STRONG"):
        assert findings.get(finding, "").startswith("offered"), (finding, findings.get(finding))
