"""Gateway mode: deliver one queued mail to one domain, by its MX hosts or the relay."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass

import dns.asyncresolver

from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.mail import mx, smtp_direct
from mssbridge.mail.mx import MailHost
from mssbridge.mail.smtp_out import RefusedRecipient, Submission
from mssbridge.mail.smtp_sessions import SessionCache
from mssbridge.store.delivery_repo import DeliveryRepo, recipients_of
from mssbridge.store.tables import Delivery
from mssbridge.store.whitelist_repo import WhitelistRepo

log = logging.getLogger("mssbridge.delivery")

NOT_LISTED = (
    "Le domaine {domain} n'est pas dans la liste blanche MSSanté : aucun serveur ne peut y "
    "être authentifié."
)


@dataclass(frozen=True)
class Route:
    """Where a domain's mail goes: its MX hosts (``relay`` empty) or the relay HOST:PORT.

    ``resolver`` and ``port`` default to the system resolver and port 25; other values are
    for the lab and the tests.
    """

    tls_context: Callable[[], ssl.SSLContext]
    relay: str = ""
    resolver: dns.asyncresolver.Resolver | None = None
    port: int = smtp_direct.SMTP_PORT
    timeout: float = 60.0
    helo: str | None = None


class DeliveryFlow:
    """Delivers a delivery row; closes it on success, raises for the worker's rules."""

    def __init__(
        self, ctx: BridgeContext, route: Route, sessions: SessionCache | None = None
    ) -> None:
        self.ctx = ctx
        self.route = route
        self.sessions = sessions
        self.repo = DeliveryRepo(ctx.store)
        self.resolver = route.resolver or mx.resolver()

    async def handle(self, row: Delivery) -> None:
        recipients = recipients_of(row)
        message = self.repo.message_of(row)
        hosts, port, listed = await self._target(row.domain)
        if row.attempt_started_at is not None:
            # The last attempt ended with no answer recorded (a crash, a cut connection): it
            # may have been delivered. This one carries the same Message-ID (docs/gateway.md).
            log.warning("delivery row %s: last attempt has no recorded outcome", row.id)
        await self.repo.mark_attempt(row)
        try:
            outcome = await self._deliver(row, hosts, port, listed, recipients, message)
        except smtp_direct.InterruptedDelivery:
            raise  # cut in a transaction: the peer may have the mail, the mark stays
        except (Rejected, TemporaryFailure):
            await self.repo.clear_attempt(row)  # an answer, or no server reached: not sent
            raise
        deferred = [r for r in outcome.refused if not r.permanent]
        refused = [r for r in outcome.refused if r.permanent]
        if not outcome.accepted:
            await self.repo.clear_attempt(row)
            raise _refusal(list(outcome.refused))
        if refused:
            names = ", ".join(f"{r.address} ({r.code})" for r in refused)
            await self.ctx.notice(
                row.room_id,
                f"⚠️ Message non remis à : {names}. Les autres destinataires l'ont reçu.",
                f"mssb-partial-d{row.id}",
                row.event_id,
            )
        if deferred:
            # Those who took it are done; the others are tried again later, alone.
            await self.repo.narrow(row, [r.address for r in deferred])
            raise TemporaryFailure(f"recipients deferred: {len(deferred)}")
        await self.repo.delivered(row, outcome.accepted)
        log.info("delivery row %s: %s took it", row.id, row.domain)

    async def _deliver(
        self,
        row: Delivery,
        hosts: list[MailHost],
        port: int,
        listed: list[str] | None,
        recipients: list[str],
        message: bytes,
    ) -> Submission:
        return await smtp_direct.deliver(
            row.domain,
            hosts,
            self.resolver,
            self.route.tls_context(),
            listed,
            sender=row.sender,
            recipients=recipients,
            message=message,
            port=port,
            timeout=self.route.timeout,
            helo=self.route.helo,
            sessions=self.sessions,
        )

    async def _target(self, domain: str) -> tuple[list[MailHost], int, list[str] | None]:
        """Hosts, port and the DNs a server may present (None: a relay, named by its host)."""
        if self.route.relay:
            host, _, port = self.route.relay.rpartition(":")
            return [MailHost(0, host.strip("[]"))], int(port), None
        listed = await WhitelistRepo(self.ctx.store).operator_dns(domain)
        if not listed:
            raise Rejected(NOT_LISTED.format(domain=domain), code="5.7.1")
        return await mx.mail_hosts(domain, self.resolver), self.route.port, listed


def _refusal(refused: list[RefusedRecipient]) -> Rejected | TemporaryFailure:
    """Every recipient of the domain refused: retry when one refusal is temporary."""
    if any(not r.permanent for r in refused):
        return TemporaryFailure(f"recipients deferred: {len(refused)}")
    names = ", ".join(f"{r.address} ({r.code})" for r in refused)
    return Rejected(f"Le serveur MSSanté a refusé l'adresse : {names}.", code=refused[0].code)


async def notify_refusal(ctx: BridgeContext, row: Delivery, exc: Rejected) -> None:
    """A delivery refused for good (or given up): the room is told, without content."""
    await ctx.notice(
        row.room_id,
        f"⚠️ Message non transmis au domaine {row.domain} : {exc.user_message}",
        f"mssb-rejected-d{row.id}",
        row.event_id,
    )
