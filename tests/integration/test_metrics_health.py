"""/metrics after real queue activity, and /health going from 200 to 503 when the store goes."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlmodel import select

from mssbridge.config import RetrySection
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.delivery_worker import DeliveryWorker
from mssbridge.flows.worker import QueueWorker
from mssbridge.metrics import BridgeMetrics, MetricsServer, ScrapeSources, health_check
from mssbridge.store.delivery_repo import DeliveryRepo, recipients_of
from mssbridge.store.ops import OpsStore
from mssbridge.store.repo import Store
from mssbridge.store.tables import Delivery, Outbox

pytestmark = pytest.mark.integration


def _event(event_id: str, body: str) -> dict[str, object]:
    return {
        "event_id": event_id,
        "room_id": f"!{event_id[1:]}:h",
        "sender": "@a:h",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": body},
    }


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_metrics_after_flow_activity_and_health(
    store: Store, database_url: str, test_pki: object
) -> None:
    metrics = BridgeMetrics()
    portal = await store.create_portal(subject="s", correspondents=["d@c.fr"], room_id="!p:h")

    async def handle(row: Outbox) -> None:
        body = store.event_of(row)["content"]["body"]
        if body == "refuse":
            raise Rejected("refusé", code="5.1.1")
        if body == "later":
            raise TemporaryFailure("peer down")
        await store.record_relay(
            portal, [(row.event_id, f"<{row.id}@b>")], "out", queue=Outbox, row_id=row.id
        )

    async def no_report(row: Outbox, exc: Rejected) -> None:
        return None

    worker = QueueWorker(
        "outbox",
        store,
        Outbox,
        store.claim_outbox,
        handle,
        no_report,
        RetrySection(first_delay=3600),
        metrics=metrics,
    )
    events = [_event("$1", "ok"), _event("$2", "ok"), _event("$3", "refuse"), _event("$4", "later")]
    metrics.received("out", await store.store_transaction("t", events))
    for row in await store.claim_outbox("w", 60, 10):
        await worker.process(row)

    ops = OpsStore(store)
    worker_task = asyncio.create_task(asyncio.sleep(3600), name="outbox")
    health = health_check(ops.ping, lambda: {"outbox": not worker_task.done()})
    cert = next(iter(test_pki.clients.values())).chain  # type: ignore[attr-defined]
    sources = ScrapeSources(queue_stats=ops.queue_stats, cert_file=cert)
    server = MetricsServer(metrics, sources, health)
    await server.start("127.0.0.1:0")
    base = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as resp:
                assert resp.status == 200
                text = await resp.text()
            values = _samples(text)
            msg = "mssbridge_messages_total"
            assert values[(msg, (("direction", "out"), ("outcome", "received")))] == 4
            assert values[(msg, (("direction", "out"), ("outcome", "sent")))] == 2
            assert values[(msg, (("direction", "out"), ("outcome", "rejected")))] == 1
            assert values[(msg, (("direction", "out"), ("outcome", "retried")))] == 1
            reason = (("direction", "out"), ("reason", "5.1.1"))
            assert values[("mssbridge_rejections_total", reason)] == 1
            assert values[("mssbridge_relay_latency_seconds_count", (("direction", "out"),))] == 2
            depth = "mssbridge_queue_depth"
            assert values[(depth, (("queue", "outbox"), ("state", "retry")))] == 1
            assert values[(depth, (("queue", "outbox"), ("state", "rejected")))] == 1
            assert values[(depth, (("queue", "inbox"), ("state", "pending")))] == 0
            oldest = (
                "mssbridge_queue_oldest_age_seconds",
                (("queue", "outbox"), ("state", "retry")),
            )
            assert 0 <= values[oldest] < 60
            assert values[("mssbridge_certificate_days_left", ())] > 0
            assert "DUPONT" not in text and "d@c.fr" not in text

            async with http.get(f"{base}/health") as resp:
                assert resp.status == 200
                assert await resp.json() == {
                    "status": "ok",
                    "store": True,
                    "tasks": {"outbox": True},
                }
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 503
                assert (await resp.json())["tasks"] == {"outbox": False}

            # The store goes away: health fails on it.
            worker_task = asyncio.create_task(asyncio.sleep(3600), name="outbox")
            await _remove_database(store, database_url)
            async with http.get(f"{base}/health") as resp:
                assert resp.status == 503
                assert (await resp.json())["store"] is False
            async with http.get(f"{base}/metrics") as resp:  # still served, gauges stale
                assert resp.status == 200
                assert "mssbridge_scrape_errors_total" in await resp.text()
    finally:
        worker_task.cancel()
        await server.stop()


async def _remove_database(store: Store, url: str) -> None:
    await store.engine.dispose()
    if url.startswith("sqlite"):
        path = Path(url.split("///", 1)[1])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.mkdir()  # the file cannot come back: a directory holds its name
    else:
        from fixtures.database import drop_postgres_database

        drop_postgres_database(url.rsplit("/", 1)[1])


async def _delivery_rows(store: Store, domains: list[str]) -> list[Delivery]:
    """One stored event and one delivery row per entry of ``domains``, as the outbound flow."""
    repo = DeliveryRepo(store)
    made = []
    for n, domain in enumerate(domains):
        await store.store_transaction(f"d{n}", [_event(f"$d{n}", "x")])
        async with store.session() as session:
            row = (
                await session.execute(select(Outbox).where(Outbox.event_id == f"$d{n}"))
            ).scalar_one()
        made.append(repo.new(row, domain, "bal@h", [f"a@{domain}"], f"<d{n}@h>", b"secret"))
    async with store.session() as session, session.begin():
        session.add_all(made)
    return made


async def test_delivery_queue_metrics(store: Store) -> None:
    """Gateway deliveries: outcomes counted by the worker, depth and per-domain gauges."""
    metrics = BridgeMetrics()
    up, down, busy = "up.mssante.fr", "down.mssante.fr", "busy.mssante.fr"
    rows = await _delivery_rows(store, [up, down, down, busy, busy])

    async def handle(row: Delivery) -> None:
        if row.event_id == "$d1":
            raise Rejected("refusé", code="5.1.1")
        if row.event_id == "$d2":
            raise TemporaryFailure("no MX host reachable")
        await DeliveryRepo(store).delivered(row, recipients_of(row))

    async def no_report(row: Delivery, exc: Rejected) -> None:
        return None

    worker = DeliveryWorker(
        store,
        handle,
        no_report,
        RetrySection(first_delay=3600),
        per_domain=4,
        lease=60,
        metrics=metrics,
    )
    for row in rows[:3]:
        await worker.process(row)
    # One of busy's rows is being delivered (leased), the other waits behind it.
    (leased,) = await DeliveryRepo(store).claim("w", 600, 1, {}, per_domain=1)
    assert leased.domain == busy

    ops = OpsStore(store)
    sources = ScrapeSources(queue_stats=ops.queue_stats, delivery_stats=ops.delivery_stats)
    server = MetricsServer(metrics, sources, health_check(ops.ping, dict))
    await server.start("127.0.0.1:0")
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{server.port}/metrics") as resp,
        ):
            assert resp.status == 200
            text = await resp.text()
    finally:
        await server.stop()
    values = _samples(text)
    for outcome, count in (("delivered", 1), ("rejected", 1), ("retried", 1)):
        assert values[("mssbridge_deliveries_total", (("outcome", outcome),))] == count
    assert values[("mssbridge_delivery_refusals_total", (("reason", "5.1.1"),))] == 1
    depth = "mssbridge_queue_depth"
    assert values[(depth, (("queue", "delivery"), ("state", "pending")))] == 2
    assert values[(depth, (("queue", "delivery"), ("state", "retry")))] == 1
    assert values[(depth, (("queue", "delivery"), ("state", "rejected")))] == 1
    assert values[("mssbridge_delivery_open", (("domain", busy),))] == 2
    assert values[("mssbridge_delivery_in_flight", (("domain", busy),))] == 1
    assert values[("mssbridge_delivery_open", (("domain", down),))] == 1
    assert values[("mssbridge_delivery_in_flight", (("domain", down),))] == 0
    assert 0 <= values[("mssbridge_delivery_oldest_age_seconds", (("domain", busy),))] < 60
    # A domain with nothing open left has no gauge; no address or content is exposed.
    assert ("mssbridge_delivery_open", (("domain", up),)) not in values
    assert "a@" not in text and "secret" not in text
