"""Prometheus metrics and ``/health`` on a loopback HTTP port (aiohttp, on the bridge's loop).

Counters and histograms are fed by the flows as rows close; queue gauges, certificate and
whitelist ages are read at scrape time. Everything lives in a registry of its own (not the
process-global one), so several bridges in one test process do not mix their figures.
Labels carry directions, states, kinds, status codes and, for gateway deliveries, the
recipient domain (an operator's domain): never an address or content.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from mssbridge.store.tables import RowState

log = logging.getLogger("mssbridge.metrics")

LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 86400, 4 * 86400)
HEALTH_STORE_TIMEOUT = 5.0
# Outcome label of a row closed in each state, by direction (as the audit trail words them).
_OUTCOME = {
    ("out", RowState.DONE): "sent",
    ("in", RowState.DONE): "relayed",
    ("out", RowState.REJECTED): "rejected",
    ("in", RowState.REJECTED): "rejected",
    ("out", RowState.SHUNTED): "shunted",
    ("in", RowState.SHUNTED): "shunted",
    ("out", RowState.DROPPED): "dropped",
    ("in", RowState.DROPPED): "dropped",
    ("out", RowState.RETRY): "retried",
    ("in", RowState.RETRY): "retried",
}
# Outcome label of a gateway delivery row left in each state.
_DELIVERY_OUTCOME = {
    RowState.DONE: "delivered",
    RowState.REJECTED: "rejected",
    RowState.SHUNTED: "shunted",
    RowState.DROPPED: "dropped",
    RowState.RETRY: "retried",
}


class BridgeMetrics:
    """The bridge's Prometheus metrics, in a registry of their own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "mssbridge_messages",
            "Items by direction (out: Matrix to mail, in: mail to Matrix) and outcome "
            "(received, sent, relayed, rejected, shunted, dropped, retried).",
            ["direction", "outcome"],
            registry=r,
        )
        self.rejections = Counter(
            "mssbridge_rejections",
            "Refused items by direction and reason (enhanced status code or short label).",
            ["direction", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "mssbridge_relay_latency_seconds",
            "From storing an item to relaying it (out: event stored to mail accepted; in: "
            "mail stored to message posted).",
            ["direction"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "mssbridge_queue_depth", "Items per queue and state.", ["queue", "state"], registry=r
        )
        self.queue_oldest = Gauge(
            "mssbridge_queue_oldest_age_seconds",
            "Age of the oldest item per queue and state (0 when empty).",
            ["queue", "state"],
            registry=r,
        )
        self._delivery_metrics(r)
        self.certificate_days = Gauge(
            "mssbridge_certificate_days_left",
            "Days before the bridge's IGC-Santé certificate expires.",
            registry=r,
        )
        self.whitelist_age = Gauge(
            "mssbridge_whitelist_age_days",
            "Age in days of the MSSanté whitelist in force (-1: none imported).",
            registry=r,
        )
        self.purged = Counter(
            "mssbridge_purged_rows", "Rows removed by the retention purge.", ["kind"], registry=r
        )
        self.purge_last = Gauge(
            "mssbridge_purge_last_success_timestamp_seconds",
            "When the last complete retention purge ended.",
            registry=r,
        )
        self.scrape_errors = Counter(
            "mssbridge_scrape_errors", "Scrape-time readings that failed.", ["source"], registry=r
        )

    def _delivery_metrics(self, r: CollectorRegistry) -> None:
        """Gateway mode sending itself: one delivery row per event and recipient domain."""
        self.deliveries = Counter(
            "mssbridge_deliveries",
            "Gateway deliveries (one per message and recipient domain) by outcome (delivered, "
            "rejected, shunted, dropped, retried).",
            ["outcome"],
            registry=r,
        )
        self.delivery_refusals = Counter(
            "mssbridge_delivery_refusals",
            "Gateway deliveries refused for good, by reason (enhanced status code or label).",
            ["reason"],
            registry=r,
        )
        self.delivery_open = Gauge(
            "mssbridge_delivery_open",
            "Open gateway deliveries (pending or retry) per recipient domain.",
            ["domain"],
            registry=r,
        )
        self.delivery_in_flight = Gauge(
            "mssbridge_delivery_in_flight",
            "Gateway deliveries being attempted now (leased, every instance) per domain.",
            ["domain"],
            registry=r,
        )
        self.delivery_oldest = Gauge(
            "mssbridge_delivery_oldest_age_seconds",
            "Age of the oldest open gateway delivery per recipient domain.",
            ["domain"],
            registry=r,
        )

    # -- fed by the flows ----------------------------------------------------------------

    def received(self, direction: str, count: int = 1) -> None:
        """Items stored in a queue (events from the homeserver, mails from the mailbox)."""
        if count:
            self.messages.labels(direction, "received").inc(count)

    def closed(
        self,
        direction: str,
        state: str,
        *,
        created_at: float,
        reason: str | None = None,
        now: float | None = None,
    ) -> None:
        """A row left a worker in ``state`` (retry counts as one retried attempt)."""
        outcome = _OUTCOME.get((direction, RowState(state)))
        if outcome is None:
            return
        self.messages.labels(direction, outcome).inc()
        if state == RowState.DONE:
            elapsed = (now if now is not None else time.time()) - created_at
            self.latency.labels(direction).observe(max(0.0, elapsed))
        elif state == RowState.REJECTED:
            self.rejections.labels(direction, reason or "unknown").inc()

    def delivery_closed(self, state: str, reason: str | None = None) -> None:
        """A delivery row left the delivery worker in ``state``."""
        outcome = _DELIVERY_OUTCOME.get(RowState(state))
        if outcome is None:
            return
        self.deliveries.labels(outcome).inc()
        if state == RowState.REJECTED:
            self.delivery_refusals.labels(reason or "unknown").inc()

    def set_delivery_domains(self, stats: list[Any], now: float) -> None:
        """Per-domain gauges of open deliveries; a domain with none left disappears."""
        for gauge in (self.delivery_open, self.delivery_in_flight, self.delivery_oldest):
            gauge.clear()
        for stat in stats:
            self.delivery_open.labels(stat.domain).set(stat.open)
            self.delivery_in_flight.labels(stat.domain).set(stat.in_flight)
            self.delivery_oldest.labels(stat.domain).set(max(0.0, now - stat.oldest_created_at))

    def purge_counts(self, counts: dict[Any, int]) -> None:
        for kind, count in counts.items():
            if count:
                self.purged.labels(str(kind)).inc(count)
        self.purge_last.set(time.time())

    def render(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class ScrapeSources:
    """Where the scrape-time gauges come from (each optional)."""

    queue_stats: Callable[[], Awaitable[list[Any]]] | None = None
    delivery_stats: Callable[[], Awaitable[list[Any]]] | None = None
    whitelist_generated_at: Callable[[], Awaitable[float | None]] | None = None
    cert_file: Path | None = None
    clock: Callable[[], float] = time.time


async def refresh(metrics: BridgeMetrics, sources: ScrapeSources) -> None:
    """Read the gauges computed at scrape time; a failing source is counted, not fatal."""
    now = sources.clock()
    if sources.queue_stats is not None:
        try:
            for stat in await sources.queue_stats():
                metrics.queue_depth.labels(stat.queue, stat.state).set(stat.count)
                oldest = now - stat.oldest_created_at if stat.oldest_created_at else 0.0
                metrics.queue_oldest.labels(stat.queue, stat.state).set(max(0.0, oldest))
        except Exception as exc:
            log.warning("metrics: queue gauges unavailable (%s)", type(exc).__name__)
            metrics.scrape_errors.labels("store").inc()
    if sources.delivery_stats is not None:
        try:
            metrics.set_delivery_domains(await sources.delivery_stats(), now)
        except Exception as exc:
            log.warning("metrics: delivery gauges unavailable (%s)", type(exc).__name__)
            metrics.scrape_errors.labels("store").inc()
    if sources.whitelist_generated_at is not None:
        try:
            generated = await sources.whitelist_generated_at()
            age = -1.0 if generated is None else (now - generated) / 86400.0
            metrics.whitelist_age.set(round(age, 3))
        except Exception as exc:
            log.warning("metrics: whitelist age unavailable (%s)", type(exc).__name__)
            metrics.scrape_errors.labels("whitelist").inc()
    if sources.cert_file is not None:
        from mssbridge.security.certinfo import certificate_days_left

        try:
            metrics.certificate_days.set(certificate_days_left(sources.cert_file))
        except Exception as exc:
            log.warning("metrics: certificate unreadable (%s)", type(exc).__name__)
            metrics.scrape_errors.labels("certificate").inc()


HealthCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]


def health_check(
    ping: Callable[[], Awaitable[None]], tasks: Callable[[], dict[str, bool]]
) -> HealthCheck:
    """Healthy when the store answers within a few seconds and every named task runs."""

    async def check() -> tuple[bool, dict[str, Any]]:
        try:
            await asyncio.wait_for(ping(), HEALTH_STORE_TIMEOUT)
            store_ok = True
        except Exception:
            store_ok = False
        running = tasks()
        ok = store_ok and all(running.values())
        return ok, {"status": "ok" if ok else "failing", "store": store_ok, "tasks": running}

    return check


class MetricsServer:
    """``GET /metrics`` and ``GET /health`` on ``host:port``."""

    def __init__(self, metrics: BridgeMetrics, sources: ScrapeSources, health: HealthCheck) -> None:
        self.metrics = metrics
        self.sources = sources
        self.health = health
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _metrics(self, _request: web.Request) -> web.Response:
        await refresh(self.metrics, self.sources)
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _health(self, _request: web.Request) -> web.Response:
        ok, detail = await self.health()
        return web.json_response(detail, status=200 if ok else 503)

    async def start(self, listen: str) -> None:
        host, _, port = listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/health", self._health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]"), int(port))
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("metrics and health on http://%s:%s/", host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
