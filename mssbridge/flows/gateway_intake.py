"""Gateway mode, inbound: decides on each SMTP step and stores accepted mail before the 250."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from mssbridge.config import Settings
from mssbridge.flows.mail_intake import header_message_id
from mssbridge.mail import smtp_replies as replies
from mssbridge.policy.access import AccessRules, access_rules
from mssbridge.policy.recipients import Outcome, RecipientMap, RecipientRule, resolve
from mssbridge.policy.whitelist import domain_of
from mssbridge.security.peer_dn import Dn, dn_listed
from mssbridge.store.batch_writer import BatchWriter
from mssbridge.store.gateway_repo import AcceptedMail, GatewayRepo, queue_id
from mssbridge.store.repo import Store
from mssbridge.store.whitelist_cache import WhitelistCache
from mssbridge.store.whitelist_repo import WhitelistRepo

log = logging.getLogger("mssbridge.gateway")

NULL_SENDER = "<>"


def recipient_map(settings: Settings) -> RecipientMap:
    gateway = settings.gateway
    return RecipientMap(
        domain=gateway.domain,
        server_name=settings.matrix.server_name,
        rules=tuple(RecipientRule(r.local_part, r.user) for r in gateway.recipients),
        default_rule=gateway.default_rule,
        bot_localpart=settings.matrix.bot_localpart,
        ghost_prefix=settings.matrix.ghost_prefix,
    )


def gateway_access(settings: Settings) -> AccessRules:
    return access_rules(
        settings.access.users,
        settings.matrix.allowed_users,
        settings.matrix.server_name,
        settings.access.patient_context,
        settings.access.admins,
    )


class GatewayIntake:
    """The decisions behind the gateway's replies; the SMTP adapter only speaks them.

    Every refusal is logged once with its reason and the peer, never with content.
    """

    def __init__(
        self, settings: Settings, store: Store, on_stored: Callable[[], None] = lambda: None
    ) -> None:
        self.store = store
        self.whitelist = WhitelistRepo(store)
        self.repo = GatewayRepo(store, settings.gateway.domain)
        self.senders = WhitelistCache(self.whitelist, self.repo.operator_dns)
        self.recipients = recipient_map(settings)
        self.access = gateway_access(settings)
        self.on_stored = on_stored
        self.writer: BatchWriter[AcceptedMail, tuple[int, int]] = BatchWriter(self.repo.store_mails)

    async def close(self) -> None:
        """Commit the mails already queued, then stop the writer (once the server is closed:
        those sessions are gone before their 250, and their peers will find the rows)."""
        await self.writer.close()

    async def check_sender(
        self, sender: str, subject: Dn | None, subject_text: str, peer: str
    ) -> str | None:
        """None when ``sender`` may send from this peer's certificate, else the refusal.

        The sender's domain must be in the whitelist and the certificate's DN listed for
        that domain. A null sender (a delivery report) names no domain: the certificate must
        then be listed for some domain, so reports still come only from MSSanté operators.
        No ``subject``: a clear-text session, which ``gateway.require_tls = false`` allows on
        loopback for benchmarks and tests; only the sender's domain is checked.
        """
        try:
            if not await self.senders.in_force():
                log.warning("gateway: refused %s: no whitelist imported", peer)
                return replies.REPLY_NO_WHITELIST
            if sender == NULL_SENDER:
                listed = await self.senders.any_operator_dns()
                domain = "(null sender)"
            else:
                domain = domain_of(sender)
                listed = await self.senders.operator_dns(domain)
                if not listed:
                    log.warning(
                        "gateway: refused %s: sender domain %s not in the whitelist", peer, domain
                    )
                    return replies.REPLY_SENDER_NOT_WHITELISTED
        except (SQLAlchemyError, OSError) as exc:
            log.error("gateway: whitelist look-up failed for %s (%s)", peer, type(exc).__name__)
            return replies.REPLY_STORE_FAILED
        if subject is not None and not dn_listed(subject, listed):
            log.warning(
                "gateway: refused %s: certificate %s not listed for %s", peer, subject_text, domain
            )
            return replies.REPLY_CERT_NOT_LISTED
        return None

    def check_recipient(self, address: str, peer: str) -> tuple[str | None, str | None]:
        """(refusal, None) or (None, Matrix user) for one RCPT TO."""
        resolved = resolve(address, self.recipients, self.access)
        if resolved.outcome is Outcome.USER:
            return None, resolved.user
        log.info("gateway: recipient refused for %s: %s", peer, resolved.outcome.value)
        if resolved.outcome is Outcome.OTHER_DOMAIN:
            return replies.REPLY_RELAY_DENIED, None
        return replies.REPLY_UNKNOWN_RECIPIENT, None

    async def deliver(
        self, sender: str, users: list[str], raw: bytes, trace: bytes, peer: str
    ) -> str:
        """Store the mail; the reply is 250 only once its row is committed.

        Mails of concurrent sessions that end their data together share one transaction
        (group commit): each gets its 250 once that transaction is committed, and all of
        them 451 if it fails, none stored.
        """
        mail = AcceptedMail(raw, header_message_id(raw), trace, sender, tuple(users))
        try:
            row_id, key = await self.writer.submit(mail)
        except Exception as exc:  # not stored, whatever the reason: the peer keeps it
            log.error("gateway: mail from %s not stored (%s)", peer, type(exc).__name__)
            return replies.REPLY_STORE_FAILED
        log.info(
            "gateway: mail from %s stored as inbox row %s (%d bytes, %d recipient(s))",
            peer,
            row_id,
            len(raw),
            len(users),
        )
        self.on_stored()
        return replies.queued(queue_id(key))
