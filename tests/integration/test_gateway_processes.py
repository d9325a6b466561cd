"""gateway.processes: SMTP worker processes share the port, store before 250, restart, stop."""

from __future__ import annotations

import asyncio
import contextlib
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
from mssbridge.mail import smtp_replies as replies
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
    refusals: list[str]

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

    async def refused_in_clear(self) -> str:
        """A MAIL before STARTTLS over a new connection; the reply (a refusal)."""
        smtp = await RawSmtp.connect("127.0.0.1", self.port)
        try:
            await smtp.command("EHLO peer.test")
            return await smtp.command(f"MAIL FROM:<{SENDER}>")
        finally:
            await smtp.close()

    async def stored(self) -> int:
        async with self.store.session() as session:
            found = await session.execute(select(func.count()).select_from(Inbox))
            return int(found.scalar_one())


@pytest.fixture
async def shared(tmp_path: Path, test_pki: TestPki) -> AsyncIterator[Shared]:
    # Counted over every process: the 24 sessions at once must not meet it.
    async with _shared(tmp_path, test_pki, "gateway.max_sessions_per_peer=50") as ready:
        yield ready


@contextlib.asynccontextmanager
async def _shared(tmp_path: Path, test_pki: TestPki, *overrides: str) -> AsyncIterator[Shared]:
    """The daemon's gateway and two workers on one port, over a SQLite store."""
    url = sqlite_url(tmp_path / "store.db")
    settings = gateway_settings(
        tmp_path,
        test_pki,
        "gateway.processes=3",
        f"bridge.database={url}",
        f"bridge.key_file={tmp_path / 'key'}",
        *overrides,
    )
    async with open_test_store(url, tmp_path / "key") as store:
        await import_peer_whitelist(store, test_pki)
        wakeups: list[int] = []
        refusals: list[str] = []
        service = GatewayService(settings)
        await service.start(store, lambda: wakeups.append(1), refusals.append)
        try:
            yield Shared(service, store, test_pki, wakeups, refusals)
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


async def test_refusals_of_every_process_reach_the_daemon(shared: Shared) -> None:
    count = 24
    answers = await asyncio.gather(*(shared.refused_in_clear() for _ in range(count)))
    assert answers == [replies.REPLY_STARTTLS_REQUIRED] * count
    # The kernel spread the sessions among the three processes (all 24 in the daemon's own
    # has a chance of 3 ** -24); each refusal is counted once, in the daemon.
    await _until(lambda: len(shared.refusals) == count)
    assert set(shared.refusals) == {replies.code_of(replies.REPLY_STARTTLS_REQUIRED)}
    await asyncio.sleep(0.2)
    assert len(shared.refusals) == count
    assert shared.wakeups == []  # nothing was stored: the inbox worker is not woken


async def _alive(sessions: list[RawSmtp]) -> list[RawSmtp]:
    """The sessions the server still answers (those of a killed process are closed)."""
    alive = []
    for smtp in sessions:
        with contextlib.suppress(OSError):
            if (await smtp.command("NOOP")).startswith("250"):
                alive.append(smtp)
    return alive


async def test_the_per_peer_cap_counts_the_sessions_of_every_process(
    tmp_path: Path, test_pki: TestPki
) -> None:
    cap = 4
    async with _shared(tmp_path, test_pki, f"gateway.max_sessions_per_peer={cap}") as shared:
        sessions = [await RawSmtp.connect("127.0.0.1", shared.port) for _ in range(12)]
        try:
            # Opened one after the other, spread among the three processes by the kernel:
            # the cap holds for the peer as a whole, not once per process.
            greeted = [s for s in sessions if s.greeting.startswith("220")]
            assert len(greeted) == cap
            refused = [s.greeting for s in sessions if s not in greeted]
            assert refused == [replies.REPLY_TOO_MANY_SESSIONS] * (12 - cap)
            code = replies.code_of(replies.REPLY_TOO_MANY_SESSIONS)
            await _until(lambda: shared.refusals.count(code) == 12 - cap)

            # A worker killed with sessions open: they ended with it, and count no more.
            counts = shared.service.peer_counts
            assert counts is not None and counts.total("127.0.0.1") == cap
            for pid in shared.workers.pids:
                os.kill(pid, signal.SIGKILL)
            await _until(lambda: shared.workers.restarts == 2 and len(shared.workers.pids) == 2)
            alive = await _alive(greeted)
            assert counts.total("127.0.0.1") == len(alive)
            more = [await RawSmtp.connect("127.0.0.1", shared.port) for _ in range(cap)]
            sessions += more
            assert sum(s.greeting.startswith("220") for s in more) == cap - len(alive)
        finally:
            for smtp in sessions:
                await smtp.close()
        # Closed sessions are released in whichever process held them.
        await _until(lambda: counts.total("127.0.0.1") == 0)


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
