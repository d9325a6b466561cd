"""The daemon's life cycle: open the store, start the appservice, the workers and IMAP; stop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from typing import Any

from mssbridge.config import Settings
from mssbridge.convert.address import address_from_user_id
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.gateway import GatewayService
from mssbridge.flows.gateway_out import uses_gateway_outbound
from mssbridge.flows.gateway_sending import GatewaySending
from mssbridge.flows.inbound import InboundFlow
from mssbridge.flows.mail_intake import MailIntake
from mssbridge.flows.outbound import OutboundFlow
from mssbridge.flows.receipts import is_read_notification, read_notification_refused
from mssbridge.flows.retention import RetentionFlow, ghost_redactor, mailbox_opener, policy_of
from mssbridge.flows.worker import QueueWorker, release_dead_leases
from mssbridge.mail import smtp_out
from mssbridge.mail.dkim import from_settings as dkim_from_settings
from mssbridge.matrix.appservice import BridgeAppService
from mssbridge.matrix.resend import ResendRequests
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.metrics import BridgeMetrics, MetricsServer, ScrapeSources, health_check
from mssbridge.policy.loops import BridgeIdentity, should_store_event
from mssbridge.sdnotify import Notifier
from mssbridge.security.atrest import Sealer
from mssbridge.security.tls import TlsContexts
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.ops import OpsStore
from mssbridge.store.repo import Store
from mssbridge.store.tables import Inbox, Outbox

log = logging.getLogger("mssbridge.daemon")

STOP_GRACE_SECONDS = 30.0


async def open_store(settings: Settings) -> Store:
    """Engine, migrations and the at-rest key check: the store is ready or this raises."""
    sealer = Sealer.from_file(settings.bridge.key_file)
    engine = make_engine(settings.database_url)
    await migrate(engine)
    store = Store(engine, sealer)
    await store.verify_key()
    return store


class Daemon:
    """Everything ``mssbridge run`` runs, started and stopped in a fixed order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self.tls: TlsContexts | None = None
        self._ctx: BridgeContext | None = None
        self._intake: MailIntake | None = None
        self.metrics: BridgeMetrics | None = None
        self.gateway: GatewayService | None = None
        self.sending: GatewaySending | None = None

    async def run(self) -> None:
        settings = self.settings
        store = await open_store(settings)
        await release_dead_leases(store)
        self.tls = tls_contexts = TlsContexts(settings.tls)
        # Built now: a gateway certificate or CRL problem stops the start before anything runs.
        self.gateway = gateway = GatewayService(settings) if settings.gateway.enabled else None
        # Likewise the chat domain's DKIM key and client certificate when the gateway sends.
        sending = GatewaySending(settings) if uses_gateway_outbound(settings) else None
        self.sending = sending
        dkim = dkim_from_settings(settings.dkim, settings.mailbox.address)
        password = settings.mailbox_password()
        # Submission sessions are kept between mails (a new one: TCP, TLS both ways, 2 EHLOs).
        smtp_pool = smtp_out.ConnectionPool()

        async def submit_with(
            dsn: bool, sender: str, recipients: Any, message: bytes
        ) -> smtp_out.Submission:
            return await smtp_out.submit(
                settings.mailbox,
                tls_contexts.client,  # taken per connection: a SIGHUP reload applies to the next
                password,
                sender=sender,
                recipients=recipients,
                message=message,
                dsn=dsn,
                pool=smtp_pool,
            )

        submit = functools.partial(submit_with, settings.receipts.request_delivery)

        identity = BridgeIdentity(
            server_name=settings.matrix.server_name,
            bot_localpart=settings.matrix.bot_localpart,
            ghost_prefix=settings.matrix.ghost_prefix,
            mailbox_address=settings.mailbox.address,
        )
        wake_outbox = asyncio.Event()
        self.metrics = metrics = BridgeMetrics()

        async def stored(txn_id: str, events: Any) -> int:
            count = await store.store_transaction(txn_id, events)
            if count:
                metrics.received("out", count)
                wake_outbox.set()
            return count

        def is_ghost(user_id: str) -> bool:
            matrix = settings.matrix
            return (
                address_from_user_id(user_id, matrix.ghost_prefix, matrix.server_name) is not None
            )

        # A lambda: ``appservice`` is built just below, and pinged only once it runs.
        resend = ResendRequests(lambda: appservice.ping_self(), OpsStore(store).ping)
        appservice = BridgeAppService(
            settings,
            stored,
            lambda event: should_store_event(event, identity),
            is_ghost,
            on_refused=resend.missed,
        )
        await appservice.start(settings.matrix.listen_host, settings.matrix.listen_port)
        policy = policy_of(settings)
        rooms = MatrixRooms(appservice, retention_ms=policy.room_max_lifetime_ms)
        rooms.on_unreachable = resend.missed
        self._ctx = ctx = BridgeContext(settings, store, rooms, submit, tls_contexts.client, dkim)
        ctx.submit_quiet = functools.partial(submit_with, False)  # the bridge's own MDNs
        delivery_worker = sending.attach(ctx, metrics=metrics) if sending is not None else None
        outbound = OutboundFlow(ctx)
        inbound = InboundFlow(ctx)
        outbox_worker = QueueWorker(
            "outbox",
            store,
            Outbox,
            store.claim_outbox,
            outbound.handle,
            self._notify_outbox_refusal(ctx),
            settings.retry,
            wakeup=wake_outbox,
            metrics=metrics,
            lease=settings.bridge.lease_seconds,
        )
        inbox_worker: QueueWorker[Inbox] = QueueWorker(
            "inbox",
            store,
            Inbox,
            store.claim_inbox,
            inbound.handle,
            self._notify_inbox_refusal(ctx),
            settings.retry,
            # Mails are posted in arrival order: their conversation is known only once parsed.
            # One at a time, so a mail waiting for a retry is never overtaken by the next one.
            parallel=False,
            batch=1,
            metrics=metrics,
            lease=settings.bridge.lease_seconds,
        )

        def mail_stored() -> None:
            metrics.received("in")
            inbox_worker.wake()

        self._intake = intake = MailIntake(ctx, password, mail_stored)
        retention = RetentionFlow(
            store,
            policy,
            settings.retention.batch,
            open_mailbox=mailbox_opener(settings, lambda: ctx.tls_context, password),
            redact=ghost_redactor(rooms.redact, ctx.ghost_id),
            metrics=metrics,
            actor="mssbridge",
        )
        try:
            await rooms.ensure_bot(settings.matrix.bot_displayname)
        except Exception as exc:
            log.warning("homeserver not reachable yet (%s); events will wait", exc)
        # A ping makes the homeserver resend at once what it queued while we were away,
        # instead of waiting for its backoff (up to minutes); again after each outage.
        resend.missed()
        resender = asyncio.create_task(resend.run(), name="resend")
        workers = [
            asyncio.create_task(outbox_worker.run(), name="outbox"),
            asyncio.create_task(inbox_worker.run(), name="inbox"),
        ]
        if delivery_worker is not None:
            workers.append(asyncio.create_task(delivery_worker.run(), name="delivery"))
        reader = asyncio.create_task(intake.run(), name="imap")
        if gateway is not None:
            await gateway.start(
                store, mail_stored, lambda code: metrics.rejections.labels("in", code).inc()
            )
        purger = None
        if settings.retention.schedule_minutes:
            purger = asyncio.create_task(
                retention.run(settings.retention.schedule_minutes), name="retention"
            )
        metrics_server = await self._start_metrics(settings, store, metrics, [*workers, reader])
        log.info(
            "mssbridge running: appservice on %s:%s, mailbox %s",
            settings.matrix.listen_host,
            settings.matrix.listen_port,
            settings.mailbox.address,
        )
        notifier = Notifier()
        notifier.ready(f"relaying for {settings.mailbox.address}")
        watchdog = asyncio.create_task(notifier.keep_alive(), name="watchdog")
        await self._stop.wait()
        log.info("stopping: finishing work in progress")
        notifier.stopping()
        watchdog.cancel()
        resender.cancel()
        if gateway is not None:
            await gateway.stop()  # a mail not yet answered 250 is sent again by its peer
        # The reader may be cut anywhere: a mail is flagged only after it is stored.
        intake.stop()
        reader.cancel()
        outbox_worker.stop()
        inbox_worker.stop()
        if delivery_worker is not None:
            delivery_worker.stop()
        retention.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(
                    reader, *workers, *([purger] if purger else []), return_exceptions=True
                ),
                STOP_GRACE_SECONDS,
            )
        if metrics_server is not None:
            await metrics_server.stop()
        await appservice.stop()
        await smtp_pool.close()
        await store.engine.dispose()
        log.info("stopped")

    async def _start_metrics(
        self,
        settings: Settings,
        store: Store,
        metrics: BridgeMetrics,
        tasks: list[asyncio.Task[Any]],
    ) -> MetricsServer | None:
        """Serve /metrics and /health when ``metrics.listen`` is set (a failure is logged)."""
        if not settings.metrics.listen:
            return None
        from mssbridge.store.whitelist_repo import WhitelistRepo

        ops = OpsStore(store)

        async def whitelist_generated_at() -> float | None:
            current = await WhitelistRepo(store).current()
            return current.generated_at if current else None

        sources = ScrapeSources(
            queue_stats=ops.queue_stats,
            delivery_stats=ops.delivery_stats,
            whitelist_generated_at=whitelist_generated_at,
            cert_file=settings.tls.cert_file,
        )
        health = health_check(ops.ping, lambda: {t.get_name(): not t.done() for t in tasks})
        server = MetricsServer(metrics, sources, health)
        try:
            await server.start(settings.metrics.listen)
        except OSError as exc:
            log.error("metrics: cannot listen on %s (%s)", settings.metrics.listen, exc)
            return None
        return server

    def _notify_outbox_refusal(self, ctx: BridgeContext) -> Any:
        async def notify(row: Outbox, exc: Any) -> None:
            if is_read_notification(row):
                await read_notification_refused(ctx, row, exc)
                return
            await ctx.notice(
                row.room_id,
                f"⚠️ Message non transmis : {exc.user_message}",
                f"mssb-rejected-{row.id}",
                row.event_id,
            )

        return notify

    def _notify_inbox_refusal(self, ctx: BridgeContext) -> Any:
        async def notify(row: Inbox, exc: Any) -> None:
            await ctx.admin_notice(
                f"Courriel entrant n° {row.id} non relayé : {exc.user_message}",
                f"mssb-rejected-in-{row.id}",
            )

        return notify

    def request_stop(self) -> None:
        self._stop.set()

    def reload_tls(self) -> None:
        """SIGHUP: re-read certificates, key, anchors and CRLs for the connections to come.

        A submission in progress keeps its context; kept SMTP sessions are not reused across
        a reload; the IMAP reader ends its session after its current pass and reconnects.
        """
        if self.tls is not None and self.tls.reload() and self._ctx is not None:
            self._ctx.tls_context = self.tls.client
            if self._intake is not None:
                self._intake.renew_session()
        if self.gateway is not None:
            self.gateway.reload_tls()
        if self.sending is not None:
            self.sending.reload_tls()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)
