"""What every flow needs: settings, store, Matrix hands, mail submission and room notices."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mssbridge.config import Settings
from mssbridge.convert.address import address_from_user_id, ghost_user_id
from mssbridge.directory.choices import DirectoryMemory
from mssbridge.errors import Rejected, TemporaryFailure
from mssbridge.mail.dkim import Dkim
from mssbridge.mail.smtp_out import Submission
from mssbridge.matrix.rooms import MatrixRooms
from mssbridge.policy.access import AccessRules, access_rules
from mssbridge.policy.loops import BridgeIdentity
from mssbridge.store.repo import Store

if TYPE_CHECKING:
    from mssbridge.flows.gateway_out import GatewayOutbound

log = logging.getLogger("mssbridge.flows")

Submit = Callable[[str, Sequence[str], bytes], Awaitable[Submission]]


@dataclass
class BridgeContext:
    """Shared handles of the running bridge, wired by the daemon."""

    settings: Settings
    store: Store
    rooms: MatrixRooms
    submit: Submit
    tls_context: ssl.SSLContext
    dkim: Dkim = field(default_factory=Dkim)
    directory: DirectoryMemory = field(default_factory=DirectoryMemory)
    # Submission that never asks for delivery reports (the bridge's own read notifications);
    # None: ``submit``.
    submit_quiet: Submit | None = None
    # Gateway mode sending users' mail itself (docs/gateway.md); None: ``submit`` sends it.
    gateway_out: GatewayOutbound | None = None
    # When (store clock) the IMAP reader had last stored every mail then in the mailbox: a
    # self-copy delivered before that is in the store (the check after an interrupted
    # submission, relay.md).
    mail_caught_up_at: float = 0.0
    # Set by whoever needs a newer ``mail_caught_up_at``: the reader leaves IDLE for a pass.
    mail_pass_wanted: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def access(self) -> AccessRules:
        settings = self.settings
        return access_rules(
            settings.access.users,
            settings.matrix.allowed_users,
            settings.matrix.server_name,
            settings.access.patient_context,
            settings.access.admins,
        )

    @property
    def identity(self) -> BridgeIdentity:
        return BridgeIdentity(
            server_name=self.settings.matrix.server_name,
            bot_localpart=self.settings.matrix.bot_localpart,
            ghost_prefix=self.settings.matrix.ghost_prefix,
            mailbox_address=self.settings.mailbox.address,
        )

    @property
    def bot_id(self) -> str:
        return self.identity.bot_user_id

    @property
    def mail_domain(self) -> str:
        return self.settings.mailbox.address.rsplit("@", 1)[-1].lower()

    def ghost_id(self, address: str) -> str:
        matrix = self.settings.matrix
        return ghost_user_id(address, matrix.ghost_prefix, matrix.server_name)

    def address_of(self, user_id: str) -> str | None:
        matrix = self.settings.matrix
        return address_from_user_id(user_id, matrix.ghost_prefix, matrix.server_name)

    async def notice(
        self, room_id: str, text: str, txn_id: str, reply_to: str | None = None
    ) -> None:
        """An m.notice from the bot; idempotent through its transaction id."""
        content: dict[str, Any] = {"msgtype": "m.notice", "body": text}
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        try:
            await self.rooms.send(self.bot_id, room_id, content, txn_id)
        except (Rejected, TemporaryFailure) as exc:
            log.warning("notice %s not delivered to room: %s", txn_id, exc)

    async def admin_notice(self, text: str, txn_id: str) -> None:
        room = self.settings.bridge.admin_room
        if room:
            await self.notice(room, text, txn_id)
