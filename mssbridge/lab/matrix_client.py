"""A small real Matrix client (aiohttp) that drives rooms as a person would, for tests and demos."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

import aiohttp

_CLIENT = "/_matrix/client/v3"
_SYNC_FILTER = json.dumps(
    {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {"timeline": {"limit": 100}, "ephemeral": {"not_types": ["*"]}},
    }
)

EventPredicate = Callable[[dict[str, Any]], bool]


class MatrixRequestError(RuntimeError):
    """The homeserver refused a request."""

    def __init__(self, method: str, path: str, status: int, body: Any) -> None:
        errcode = body.get("errcode") if isinstance(body, dict) else None
        super().__init__(f"{method} {path} -> HTTP {status} {errcode or ''}: {body}")
        self.status = status
        self.errcode = errcode
        self.body = body


def _quote(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class LabMatrixUser:
    """One Matrix account talking to a homeserver over the client-server API.

    `as_user` makes an appservice token act as that user (`?user_id=`), to drive ghosts.
    Use it as an async context manager, or call `close()`.
    """

    def __init__(
        self,
        base_url: str,
        access_token: str,
        user_id: str | None = None,
        *,
        as_user: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.access_token = access_token
        self.user_id = as_user or user_id or ""
        self._as_user = as_user
        self._session = session
        self._own_session = session is None
        self._since: str | None = None
        self._seen: dict[str, list[dict[str, Any]]] = {}
        self._returned: set[str] = set()
        self._invites: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    async def login(cls, base_url: str, user: str, password: str) -> LabMatrixUser:
        """Log in with a password; `user` is a localpart or a full user id."""
        anonymous = cls(base_url, "")
        try:
            answer = await anonymous._request(
                "POST",
                f"{_CLIENT}/login",
                {
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": password,
                    "initial_device_display_name": "mssbridge lab",
                },
                auth=False,
            )
        finally:
            await anonymous.close()
        return cls(base_url, answer["access_token"], answer["user_id"])

    async def __aenter__(self) -> LabMatrixUser:
        if not self.user_id:
            await self.whoami()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # -- plumbing ------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: dict[str, str] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        auth: bool = True,
        timeout: float = 60.0,
        raw: bool = False,
    ) -> Any:
        params = dict(query or {})
        if self._as_user is not None and auth:
            params["user_id"] = self._as_user
        headers = {}
        if auth:
            headers["Authorization"] = f"Bearer {self.access_token}"
        if content_type is not None:
            headers["Content-Type"] = content_type
        async with self._http().request(
            method,
            self.base_url + path,
            params=params,
            json=body if data is None and body is not None else None,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            payload = await response.read()
            if response.status >= 400:
                try:
                    detail: Any = json.loads(payload)
                except ValueError:
                    detail = payload.decode(errors="replace")[:500]
                raise MatrixRequestError(method, path, response.status, detail)
            if raw:
                return payload
            return json.loads(payload) if payload else {}

    # -- account -------------------------------------------------------------------------

    async def whoami(self) -> str:
        answer = await self._request("GET", f"{_CLIENT}/account/whoami")
        self.user_id = answer["user_id"]
        return self.user_id

    async def set_display_name(self, name: str) -> None:
        await self._request(
            "PUT", f"{_CLIENT}/profile/{_quote(self.user_id)}/displayname", {"displayname": name}
        )

    async def get_display_name(self, user_id: str | None = None) -> str | None:
        answer = await self._request(
            "GET", f"{_CLIENT}/profile/{_quote(user_id or self.user_id)}/displayname"
        )
        return answer.get("displayname")

    # -- rooms ---------------------------------------------------------------------------

    async def create_room(
        self,
        invite: Iterable[str] = (),
        name: str | None = None,
        is_direct: bool = False,
        preset: str = "private_chat",
        topic: str | None = None,
    ) -> str:
        body: dict[str, Any] = {"invite": list(invite), "is_direct": is_direct, "preset": preset}
        if name is not None:
            body["name"] = name
        if topic is not None:
            body["topic"] = topic
        answer = await self._request("POST", f"{_CLIENT}/createRoom", body)
        return str(answer["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        await self._request(
            "POST", f"{_CLIENT}/rooms/{_quote(room_id)}/invite", {"user_id": user_id}
        )

    async def join(self, room_id_or_alias: str) -> str:
        answer = await self._request("POST", f"{_CLIENT}/join/{_quote(room_id_or_alias)}", {})
        return str(answer["room_id"])

    async def leave(self, room_id: str) -> None:
        await self._request("POST", f"{_CLIENT}/rooms/{_quote(room_id)}/leave", {})

    async def joined_members(self, room_id: str) -> dict[str, dict[str, Any]]:
        """Map of joined user id to its {"display_name", "avatar_url"}."""
        answer = await self._request("GET", f"{_CLIENT}/rooms/{_quote(room_id)}/joined_members")
        return dict(answer["joined"])

    async def joined_rooms(self) -> list[str]:
        answer = await self._request("GET", f"{_CLIENT}/joined_rooms")
        return list(answer["joined_rooms"])

    async def state(self, room_id: str, event_type: str, state_key: str = "") -> dict[str, Any]:
        """The content of one state event."""
        return dict(
            await self._request(
                "GET",
                f"{_CLIENT}/rooms/{_quote(room_id)}/state/{_quote(event_type)}/{_quote(state_key)}",
            )
        )

    # -- sending -------------------------------------------------------------------------

    async def send_event(self, room_id: str, event_type: str, content: dict[str, Any]) -> str:
        txn = uuid.uuid4().hex
        answer = await self._request(
            "PUT",
            f"{_CLIENT}/rooms/{_quote(room_id)}/send/{_quote(event_type)}/{txn}",
            content,
        )
        return str(answer["event_id"])

    async def send_text(self, room_id: str, body: str, html: str | None = None) -> str:
        content: dict[str, Any] = {"msgtype": "m.text", "body": body}
        if html is not None:
            content["format"] = "org.matrix.custom.html"
            content["formatted_body"] = html
        return await self.send_event(room_id, "m.room.message", content)

    async def upload(self, data: bytes, mimetype: str, filename: str | None = None) -> str:
        """Upload bytes to the media repository; return the mxc:// URI."""
        query = {"filename": filename} if filename else None
        answer = await self._request(
            "POST", "/_matrix/media/v3/upload", query=query, data=data, content_type=mimetype
        )
        return str(answer["content_uri"])

    async def send_file(self, room_id: str, filename: str, data: bytes, mimetype: str) -> str:
        """Upload a file and post it as m.image (image/*) or m.file."""
        uri = await self.upload(data, mimetype, filename)
        msgtype = "m.image" if mimetype.startswith("image/") else "m.file"
        content = {
            "msgtype": msgtype,
            "body": filename,
            "filename": filename,
            "url": uri,
            "info": {"mimetype": mimetype, "size": len(data)},
        }
        return await self.send_event(room_id, "m.room.message", content)

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        body = {"reason": reason} if reason else {}
        answer = await self._request(
            "PUT",
            f"{_CLIENT}/rooms/{_quote(room_id)}/redact/{_quote(event_id)}/{uuid.uuid4().hex}",
            body,
        )
        return str(answer["event_id"])

    async def send_read_receipt(self, room_id: str, event_id: str) -> None:
        await self._request(
            "POST", f"{_CLIENT}/rooms/{_quote(room_id)}/receipt/m.read/{_quote(event_id)}", {}
        )

    async def read_receipts(self, room_id: str) -> dict[str, set[str]]:
        """Who holds an ``m.read`` receipt on which event of a joined room: event id → users.

        Read from a full /sync restricted to the room's receipts (the ephemeral m.receipt
        event), which leaves the incremental sync position of ``sync_once`` alone. Synapse
        answers a repeated identical /sync from its response cache (two minutes by default),
        so each call's filter names a sender that cannot exist, to make it a new request.
        """
        receipt_filter = json.dumps(
            {
                "presence": {"not_types": ["*"]},
                "account_data": {"not_types": ["*"]},
                "room": {
                    "rooms": [room_id],
                    "timeline": {"limit": 1},
                    "state": {"types": []},
                    "ephemeral": {
                        "types": ["m.receipt"],
                        "not_senders": [f"@nobody-{uuid.uuid4().hex}:invalid"],
                    },
                },
            }
        )
        answer = await self._request(
            "GET", f"{_CLIENT}/sync", query={"filter": receipt_filter, "timeout": "0"}
        )
        room = answer.get("rooms", {}).get("join", {}).get(room_id, {})
        readers: dict[str, set[str]] = {}
        for event in room.get("ephemeral", {}).get("events", []):
            if event.get("type") != "m.receipt":
                continue
            for event_id, kinds in (event.get("content") or {}).items():
                users = (kinds or {}).get("m.read") or {}
                readers.setdefault(event_id, set()).update(users)
        return readers

    # -- reading -------------------------------------------------------------------------

    async def messages(self, room_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The latest `limit` events of the room, newest first (`dir=b`)."""
        answer = await self._request(
            "GET",
            f"{_CLIENT}/rooms/{_quote(room_id)}/messages",
            query={"dir": "b", "limit": str(limit)},
        )
        return list(answer["chunk"])

    async def history(self, room_id: str, page: int = 500) -> list[dict[str, Any]]:
        """The room's whole timeline, oldest first (paginates ``/messages`` forwards)."""
        events: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            query = {"dir": "f", "limit": str(page)}
            if token:
                query["from"] = token
            answer = await self._request(
                "GET", f"{_CLIENT}/rooms/{_quote(room_id)}/messages", query=query
            )
            events.extend(answer.get("chunk") or [])
            token = answer.get("end")
            if not answer.get("chunk") or not token:
                return events

    async def download(self, mxc: str) -> bytes:
        """Fetch a file through the authenticated media API."""
        parsed = urllib.parse.urlparse(mxc)
        if parsed.scheme != "mxc" or not parsed.netloc or not parsed.path.strip("/"):
            raise ValueError(f"not an mxc:// URI: {mxc!r}")
        path = (
            f"/_matrix/client/v1/media/download/{_quote(parsed.netloc)}/"
            f"{_quote(parsed.path.strip('/'))}"
        )
        return bytes(await self._request("GET", path, raw=True))

    async def sync_once(self, timeout_ms: int = 0) -> dict[str, Any]:
        """One /sync from the last token; remembers timeline events and invites it saw."""
        query = {"filter": _SYNC_FILTER, "timeout": str(timeout_ms)}
        if self._since is not None:
            query["since"] = self._since
        answer = await self._request(
            "GET", f"{_CLIENT}/sync", query=query, timeout=timeout_ms / 1000 + 30
        )
        self._since = answer["next_batch"]
        rooms = answer.get("rooms", {})
        for room_id, room in rooms.get("join", {}).items():
            events = room.get("timeline", {}).get("events", [])
            for event in events:
                event.setdefault("room_id", room_id)
            self._seen.setdefault(room_id, []).extend(events)
            self._invites.pop(room_id, None)
        for room_id, room in rooms.get("invite", {}).items():
            self._invites[room_id] = room.get("invite_state", {}).get("events", [])
        return dict(answer)

    async def wait_for_event(
        self, room_id: str, predicate: EventPredicate, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Return the first event of the room matching `predicate` not returned before.

        Events that /sync delivered earlier count too, so nothing is missed between calls.
        """
        deadline = time.monotonic() + timeout
        while True:
            for event in self._seen.get(room_id, []):
                event_id = event.get("event_id", "")
                if event_id not in self._returned and predicate(event):
                    self._returned.add(event_id)
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no matching event in {room_id} within {timeout} s")
            await self.sync_once(timeout_ms=int(min(remaining, 5.0) * 1000))

    async def wait_for_invite(
        self,
        predicate: Callable[[str, list[dict[str, Any]]], bool] | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Wait until this user is invited to a room (matching `predicate`); return its id."""
        deadline = time.monotonic() + timeout
        while True:
            for room_id, state in self._invites.items():
                if predicate is None or predicate(room_id, state):
                    del self._invites[room_id]
                    return room_id
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no invite for {self.user_id} within {timeout} s")
            await self.sync_once(timeout_ms=int(min(remaining, 5.0) * 1000))


def text_body(event: dict[str, Any]) -> str | None:
    """The body of an m.room.message event, or None."""
    if event.get("type") != "m.room.message":
        return None
    body = event.get("content", {}).get("body")
    return body if isinstance(body, str) else None


async def wait_until(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.1) -> Any:
    """Poll an async or sync `check` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
