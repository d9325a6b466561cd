"""Acting in Matrix as the bot or a ghost: rooms, invites, messages and media."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from aiohttp import ClientError
from mautrix.api import Method, Path
from mautrix.appservice import AppService, IntentAPI
from mautrix.errors import (
    IntentError,
    MatrixConnectionError,
    MatrixRequestError,
    MatrixStandardRequestError,
)
from mautrix.types import (
    ContentURI,
    EventContent,
    EventID,
    EventType,
    Membership,
    RoomCreatePreset,
    RoomID,
    UserID,
)

from mssbridge.errors import Rejected, TemporaryFailure

log = logging.getLogger("mssbridge.matrix.rooms")

RETENTION_EVENT = "m.room.retention"


def _as_bridge_error(exc: BaseException, action: str) -> Exception:
    """Map a Matrix failure: 4xx refusals are permanent, the rest is worth a retry."""
    if isinstance(exc, MatrixStandardRequestError) and 400 <= exc.http_status < 500:
        if exc.http_status == 429:
            return TemporaryFailure(f"{action}: rate limited")
        return Rejected(
            "La messagerie instantanée a refusé l'opération.",
            code="5.7.0",
            detail=f"{action}: {exc.http_status} {exc.errcode}",
        )
    return TemporaryFailure(f"{action}: {type(exc).__name__}")


class MatrixRooms:
    """The bridge's Matrix hands: every call raises Rejected or TemporaryFailure on error."""

    def __init__(self, appservice: AppService, retention_ms: int | None = None) -> None:
        self.appservice = appservice
        # max_lifetime of the m.room.retention state given to the rooms the bridge creates.
        self.retention_ms = retention_ms
        # Display names already set on ghosts by this process (saves two requests per mail).
        self._ghost_names: dict[str, str] = {}
        self._room_names: dict[tuple[str, str], str] = {}
        # Called when the homeserver could not be reached or failed (not for a refusal).
        self.on_unreachable: Callable[[], None] = lambda: None

    @property
    def bot(self) -> IntentAPI:
        return self.appservice.intent

    def intent_for(self, user_id: str) -> IntentAPI:
        return self.bot.user(UserID(user_id))

    async def _call(self, action: str, coro: Any) -> Any:
        try:
            return await coro
        except (
            MatrixRequestError,
            MatrixConnectionError,  # homeserver unreachable: mautrix's own wrapper
            IntentError,
            ClientError,
            TimeoutError,
            OSError,
        ) as exc:
            cause = exc.__cause__ if isinstance(exc, IntentError) and exc.__cause__ else exc
            error = _as_bridge_error(cause, action)
            if not isinstance(cause, MatrixStandardRequestError) or cause.http_status >= 500:
                self.on_unreachable()
            raise error from exc

    async def ensure_ghost(self, user_id: str, display_name: str) -> IntentAPI:
        intent = self.intent_for(user_id)
        if self._ghost_names.get(user_id) == display_name:
            return intent  # registered and named already: no request per message
        await self._call("register ghost", intent.ensure_registered())
        current = await self._call("get display name", intent.get_displayname(UserID(user_id)))
        if current != display_name:
            await self._call("set display name", intent.set_displayname(display_name))
        self._ghost_names[user_id] = display_name
        return intent

    async def ensure_bot(self, display_name: str) -> None:
        await self._call("register bot", self.bot.ensure_registered())
        current = await self._call("get display name", self.bot.get_displayname(self.bot.mxid))
        if current != display_name:
            await self._call("set bot display name", self.bot.set_displayname(display_name))

    async def create_room(
        self,
        creator: str,
        name: str,
        topic: str = "",
        initial_state: list[dict[str, Any]] | None = None,
    ) -> str:
        """A private room made by ``creator`` (the bot or a ghost), nobody else in it yet.

        With ``retention_ms`` set, the room starts with ``m.room.retention`` (MSC1763) so the
        homeserver and clients drop its events after the bridge's content period.
        """
        intent = self.intent_for(creator)
        state = list(initial_state or [])
        if self.retention_ms and not any(e.get("type") == RETENTION_EVENT for e in state):
            state.append(
                {
                    "type": RETENTION_EVENT,
                    "state_key": "",
                    "content": {"max_lifetime": self.retention_ms},
                }
            )
        room_id = await self._call(
            "create room",
            intent.create_room(
                name=name,
                topic=topic or None,
                preset=RoomCreatePreset.PRIVATE,
                initial_state=cast(Any, state) or None,
            ),
        )
        await intent.state_store.joined(room_id, intent.mxid)
        return str(room_id)

    async def set_topic(self, user_id: str, room_id: str, topic: str) -> None:
        """Set ``m.room.topic`` as ``user_id`` (the bot, which must have the power to)."""
        intent = self.intent_for(user_id)
        await self._call("set topic", intent.set_room_topic(RoomID(room_id), topic))

    async def redact(self, user_id: str, room_id: str, event_id: str, reason: str) -> None:
        """Redact an event as ``user_id`` (a ghost redacting its own message needs no power)."""
        intent = self.intent_for(user_id)
        await self._call("redact", intent.redact(RoomID(room_id), EventID(event_id), reason=reason))

    async def join(self, user_id: str, room_id: str) -> None:
        """Make a bridge user join; the bot invites it first if it must."""
        intent = self.intent_for(user_id)
        await self._call("join room", intent.ensure_joined(RoomID(room_id)))

    async def show_name_in_room(self, user_id: str, room_id: str, display_name: str) -> None:
        """Make ``display_name`` the bridge user's name in this room right away.

        Synapse copies a new profile name into the user's rooms in a background task; a reply
        posted meanwhile would still show the old name, so the room's member event is set here.
        """
        key = (room_id, user_id)
        if self._room_names.get(key) == display_name:
            return
        intent = self.intent_for(user_id)
        member = await self._call(
            "member info", intent.get_room_member_info(RoomID(room_id), UserID(user_id))
        )
        if member is None or member.displayname != display_name:
            await self._call(
                "set room name",
                intent.send_member_event(
                    RoomID(room_id),
                    UserID(user_id),
                    Membership.JOIN,
                    cast(dict[str, Any], {"displayname": display_name}),
                ),
            )
        self._room_names[key] = display_name

    async def invite(self, inviter: str, room_id: str, user_id: str) -> None:
        intent = self.intent_for(inviter)
        try:
            await intent.invite_user(RoomID(room_id), UserID(user_id))
        except MatrixRequestError as exc:
            if isinstance(exc, MatrixStandardRequestError) and exc.http_status == 403:
                members = await self.joined_members(room_id)
                if user_id in members:
                    return
            raise _as_bridge_error(exc, "invite") from exc
        except (ClientError, TimeoutError, OSError) as exc:
            raise TemporaryFailure(f"invite: {type(exc).__name__}") from exc

    async def decline_invite(self, user_id: str, room_id: str, reason: str) -> None:
        """Reject an invite of a bridge user, with a reason the inviter sees (best effort)."""
        try:
            await self._call(
                "decline invite", self.intent_for(user_id).leave_room(RoomID(room_id), reason)
            )
        except (Rejected, TemporaryFailure) as exc:
            log.info("invite of %s not declined: %s", user_id, type(exc).__name__)

    async def joined_members(self, room_id: str) -> dict[str, str]:
        """Joined members and their display names."""
        members = await self._call("members", self.bot.get_joined_members(RoomID(room_id)))
        return {str(uid): (m.displayname or str(uid)) for uid, m in members.items()}

    async def display_name(self, room_id: str, user_id: str) -> str:
        try:
            member = await self.bot.get_room_member_info(RoomID(room_id), UserID(user_id))
        except (MatrixRequestError, ClientError, TimeoutError, OSError):
            member = None
        if member is not None and member.displayname:
            return str(member.displayname)
        return user_id.split(":", 1)[0].lstrip("@")

    async def send(
        self,
        sender: str,
        room_id: str,
        content: dict[str, Any],
        txn_id: str,
        event_type: str = "m.room.message",
    ) -> str:
        """Send with a transaction id derived from the stored row, so a retry is a no-op."""
        intent = self.intent_for(sender)
        # mautrix sends a plain dict as-is (only Serializable content is converted) but its
        # EventContent annotation lists the typed classes only.
        raw_content = cast(EventContent, content)
        event_id: EventID = await self._call(
            "send",
            intent.send_message_event(
                RoomID(room_id), EventType.find(event_type), raw_content, txn_id=txn_id
            ),
        )
        return str(event_id)

    async def mark_read(self, user_id: str, room_id: str, event_id: str) -> None:
        """Move ``user_id``'s read receipt and fully-read marker to ``event_id`` (idempotent)."""
        intent = self.intent_for(user_id)
        await self._call("read receipt", intent.mark_read(RoomID(room_id), EventID(event_id)))

    async def upload(self, sender: str, data: bytes, mimetype: str, filename: str) -> str:
        intent = self.intent_for(sender)
        uri: ContentURI = await self._call(
            "upload", intent.upload_media(data, mime_type=mimetype, filename=filename)
        )
        return str(uri)

    async def download(self, mxc: str) -> bytes:
        data: bytes = await self._call("download", self.bot.download_media(ContentURI(mxc)))
        return data

    async def room_name(self, user_id: str, room_id: str) -> str:
        """The room's name, or "" when it has none or cannot be read."""
        intent = self.intent_for(user_id)
        try:
            content = await intent.get_state_event(RoomID(room_id), EventType.ROOM_NAME)
        except (MatrixRequestError, ClientError, TimeoutError, OSError):
            return ""
        name = getattr(content, "name", "")
        return str(name or "")

    async def recent_events(
        self, user_id: str, room_id: str, limit: int = 50
    ) -> list[dict[str, Any]]:
        """The room's latest events as raw JSON, oldest first, read by a joined bridge user."""
        intent = self.intent_for(user_id)
        response = await self._call(
            "read history",
            intent.api.request(
                Method.GET,
                Path.v3.rooms[RoomID(room_id)].messages,
                query_params={"dir": "b", "limit": str(limit)},
            ),
        )
        chunk = response.get("chunk") if isinstance(response, dict) else None
        return [e for e in reversed(chunk or []) if isinstance(e, dict)]

    async def is_direct_with_bot(self, room_id: str) -> bool:
        members = await self.joined_members(room_id)
        return len(members) <= 2 and self.bot.mxid in members

    async def homeserver_versions(self) -> list[str]:
        versions = await self._call("versions", self.bot.versions(no_cache=True))
        return [str(v) for v in versions.supported_versions]
