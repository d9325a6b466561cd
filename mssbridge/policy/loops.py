"""Loop prevention, in one place: the bridge never relays its own ghosts', bot's or mails."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RELAYED_EVENT_TYPES = frozenset(
    {"m.room.message", "m.sticker", "m.room.redaction", "m.room.encrypted", "m.room.member"}
)


@dataclass(frozen=True)
class BridgeIdentity:
    """Who the bridge is on both sides: its Matrix users and its own mailbox address."""

    server_name: str
    bot_localpart: str
    ghost_prefix: str
    mailbox_address: str

    @property
    def bot_user_id(self) -> str:
        return f"@{self.bot_localpart}:{self.server_name}"

    def is_ghost(self, user_id: str) -> bool:
        return (
            user_id.startswith(f"@{self.ghost_prefix}")
            and user_id.endswith(f":{self.server_name}")
            and user_id != self.bot_user_id
        )

    def is_bridge_user(self, user_id: str) -> bool:
        return user_id == self.bot_user_id or self.is_ghost(user_id)


def should_store_event(event: Mapping[str, Any], bridge: BridgeIdentity) -> bool:
    """Keep only the events the bridge acts on, never those its own users produced."""
    if not isinstance(event.get("event_id"), str) or not isinstance(event.get("room_id"), str):
        return False
    sender = event.get("sender")
    if not isinstance(sender, str) or bridge.is_bridge_user(sender):
        return False
    event_type = event.get("type")
    if not isinstance(event_type, str) or event_type not in RELAYED_EVENT_TYPES:
        return False
    if event_type == "m.room.member":
        content = event.get("content") or {}
        target = event.get("state_key")
        return (
            isinstance(content, Mapping)
            and content.get("membership") == "invite"
            and isinstance(target, str)
            and bridge.is_bridge_user(target)
        )
    return True


def is_own_mail(
    sender_address: str, message_id: str | None, bridge: BridgeIdentity, own_message_id: bool
) -> bool:
    """A mail the bridge sent itself (its address as sender, or a Message-ID it minted)."""
    return sender_address.lower() == bridge.mailbox_address.lower() or (
        message_id is not None and own_message_id
    )
