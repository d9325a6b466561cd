"""A row whose outcome the store did not take runs again once the store answers, in order."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from mssbridge.config import RetrySection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.worker import QueueWorker
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, RowState

pytestmark = pytest.mark.integration

LONG_LEASE = 600.0  # far beyond the test: only taking the row back early can pass


async def _never_rejected(_row: Inbox, _exc: Rejected) -> None:
    raise AssertionError("no row is rejected here")


async def test_unrecorded_inbox_row_runs_again_before_its_lease_ends(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for uid in (1, 2):
        raw = f"Subject: mail {uid}\r\n\r\nbody {uid}\r\n".encode()
        await store.store_mail("bal@chu-test.mssante.fr/INBOX", 7, uid, raw, None)
    first, second = (row.id for row in await store.rows(Inbox, ["pending"]))
    handled: list[int | None] = []
    real_retry_later = store.retry_later

    async def retry_later_while_the_store_is_away(*args: Any, **kwargs: Any) -> None:
        if len(handled) == 1:  # the store goes away right after the first attempt
            raise OSError("database away")
        await real_retry_later(*args, **kwargs)

    monkeypatch.setattr(store, "retry_later", retry_later_while_the_store_is_away)

    async def handle(row: Inbox) -> None:
        handled.append(row.id)
        if len(handled) == 1:
            raise TemporaryFailure("homeserver away")
        await store.finish(Inbox, row.id, RowState.DONE)

    worker = QueueWorker(
        "inbox",
        store,
        Inbox,
        store.claim_inbox,
        handle,
        _never_rejected,
        RetrySection(),
        parallel=False,
        batch=1,
        lease=LONG_LEASE,
    )
    task = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(20):
            while len(handled) < 3:
                worker.wake()
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    # The unrecorded row ran again first, and the later mail only after it.
    assert handled == [first, first, second]
    assert await store.rows(Inbox, ["pending", "retry"]) == []
