"""gateway.processes: SMTP worker processes share the port, store before 250, restart, stop."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fixtures.database import open_test_store, sqlite_url
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    RawSmtp,
    client_context,
    gateway_settings,
    import_peer_whitelist,
    mail,
)
from sqlalchemy import func
from sqlmodel import select

from mssbridge.flows.gateway import GatewayService
from mssbridge.flows.gateway_workers import GatewayWorkers
from mssbridge.lab.pki import TestPki
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox

pytestmark = pytest.mark.integration

ALICE = f"alice@{CHAT_DOMAIN}"
SENDER = f"dr.pair@{PEER_DOMAIN}"


@dataclass
class Shared:
    service: GatewayService
    store: Store
    pki: TestPki
    wakeups: list[int]

    @property
    def port(self) -> int:
        assert self.service.server is not None
        return self.service.server.addresses[0][1]

    @property
    def workers(self) -> GatewayWorkers:
        assert self.service.workers is not None
        return self.service.workers

    async def send(self, subject: str) -> str:
        """One mail over a new connection with the peer's certificate; the DATA reply."""
        smtp = await RawSmtp.connect("127.0.0.1", self.port)
        try:
            await smtp.secure(client_context(self.pki, self.pki.client(PEER_CLIENT)))
            await smtp.envelope(SENDER, [ALICE])
            return await smtp.data(mail(subject))
        finally:
            await smtp.close()

    async def stored(self) -> int:
        async with self.store.session() as session:
            found = await session.execute(select(func.count()).select_from(Inbox))
            return int(found.scalar_one())


@pytest.fixture
async def shared(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[Shared]:
    url = sqlite_url(tmp_path / "store.db")
    settings = gateway_settings(
        tmp_path,
        test_pki,
        "gateway.processes=3",
        # Counted per process: the 24 sessions at once must not meet it in any one of them.
        "gateway.max_sessions_per_peer=50",
        f"bridge.database={url}",
        f"bridge.key_file={tmp_path / 'key'}",
    )
    async with open_test_store(url, tmp_path / "key") as store:
        await import_peer_whitelist(store, test_pki)
        wakeups: list[int] = []
        service = GatewayService(settings)
        await service.start(store, lambda: wakeups.append(1))
        try:
            yield Shared(service, store, test_pki, wakeups)
        finally:
            await service.stop()


async def _until(condition: object, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_workers_share_the_port_and_store_before_250(shared: Shared) -> None:
    assert len(shared.workers.pids) == 2
    count = 24
    answers = await asyncio.gather(*(shared.send(f"Partage {n}") for n in range(count)))
    assert all(answer.startswith("250 2.0.0 OK: stored as ") for answer in answers)
    # Every 250 came after the commit, whichever process gave it.
    assert await shared.stored() == count
    intake = shared.service.intake
    assert intake is not None
    # The daemon's own writer stored some at most: the workers accepted the others, and
    # told the daemon (which wakes its inbox worker).
    own = intake.writer.batches
    assert own < count
    await _until(lambda: len(shared.wakeups) > own)


async def test_a_worker_that_dies_is_started_again(shared: Shared) -> None:
    workers = shared.workers
    victim = workers.pids[0]
    os.kill(victim, signal.SIGKILL)
    await _until(lambda: workers.restarts == 1 and len(workers.pids) == 2)
    assert victim not in workers.pids
    answers = await asyncio.gather(*(shared.send(f"Relance {n}") for n in range(8)))
    assert all(answer.startswith("250 ") for answer in answers)
    assert await shared.stored() == 8


async def test_stop_ends_the_workers_and_closes_the_port(shared: Shared) -> None:
    pids = shared.workers.pids
    port = shared.port
    assert (await shared.send("Avant")).startswith("250 ")
    await shared.service.stop()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(OSError):
        await RawSmtp.connect("127.0.0.1", port)
    assert await shared.stored() == 1
