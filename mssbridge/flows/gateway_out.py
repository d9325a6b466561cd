"""Gateway mode, outbound: a user's mail from its chat-domain address, signed, queued by domain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mssbridge.config import Settings
from mssbridge.errors import ConfigError, Rejected
from mssbridge.flows.gateway_intake import gateway_access, recipient_map
from mssbridge.mail.dkim import DkimSigner, load_private_key
from mssbridge.policy.senders import by_domain, sender_address
from mssbridge.store.delivery_repo import DeliveryRepo
from mssbridge.store.repo import Store
from mssbridge.store.tables import Delivery, Outbox

NO_ADDRESS = (
    "Votre compte n'a pas d'adresse MSSanté dans le domaine {domain} : le message n'est pas "
    "parti. Contactez l'équipe informatique."
)


def uses_gateway_outbound(settings: Settings) -> bool:
    return settings.gateway.enabled and settings.gateway.outbound != "mailbox"


def chat_domain_signer(settings: Settings) -> DkimSigner:
    """The DKIM signer of the chat domain (``dkim.key_file`` and ``dkim.selector``)."""
    dkim = settings.dkim
    if dkim.key_file is None:
        raise ConfigError(
            f"gateway.outbound = {settings.gateway.outbound!r} needs dkim.key_file: mail "
            f"from {settings.gateway.domain} is signed with that domain's key"
        )
    signer = DkimSigner(dkim.selector, settings.gateway.domain, load_private_key(dkim.key_file))
    try:
        signer.sign(b"From: a@b\r\nSubject: key check\r\n\r\nx\r\n")
    except Exception as exc:
        raise ConfigError(f"dkim.key_file: unusable key ({type(exc).__name__})") from exc
    return signer


@dataclass(frozen=True)
class GatewayOutbound:
    """What the outbound flow does differently when the gateway sends the mail itself."""

    settings: Settings
    store: Store
    signer: DkimSigner
    on_queued: Callable[[], None] = lambda: None  # wakes the delivery worker

    @property
    def envelope_sender(self) -> str:
        """MAIL FROM: reports come back to the bridge's mailbox, where they are understood."""
        return self.settings.mailbox.address

    @property
    def reports_to(self) -> str:
        return self.settings.mailbox.address

    def author(self, user: str) -> str:
        """The address ``user`` writes from; Rejected when none maps back to that user."""
        address = sender_address(user, recipient_map(self.settings), gateway_access(self.settings))
        if address is None:
            raise Rejected(
                NO_ADDRESS.format(domain=self.settings.gateway.domain),
                code="5.7.1",
                detail="sender has no address in the chat domain",
            )
        return address

    async def sign(self, message: bytes) -> bytes:
        return await self.signer.sign_async(message)

    def deliveries(
        self, row: Outbox, recipients: Sequence[str], message_id: str, message: bytes
    ) -> list[Delivery]:
        """One delivery row per recipient domain, to commit with the outbox row's closing."""
        repo = DeliveryRepo(self.store)
        groups = by_domain(recipients)
        if any(not group.domain for group in groups):
            raise Rejected("Une adresse de destinataire n'a pas de domaine.", code="5.1.3")
        return [
            repo.new(row, group.domain, self.envelope_sender, group.recipients, message_id, message)
            for group in groups
        ]
