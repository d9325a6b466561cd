"""The appservice endpoint: token check, persistent transaction de-duplication, store then 200."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

from aiohttp import web
from mautrix.appservice import AppService
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.types import JSON, UserID

from mssbridge.config import Settings
from mssbridge.store.db import is_store_unavailable

log = logging.getLogger("mssbridge.matrix")

StoreTransaction = Callable[[str, Sequence[dict[str, Any]]], Awaitable[int]]
IsGhost = Callable[[str], bool]


class MemoryASStateStore(MemoryStateStore, ASStateStore):
    """Membership cache of the intents, rebuilt from the homeserver after a restart."""

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


def _json_error(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


class BridgeAppService(AppService):
    """mautrix's AppService with a durable transaction path.

    mautrix acknowledges a transaction even when a handler fails and remembers transaction
    ids in memory only; here the events are committed to the store before the 200, a store
    failure answers 500 so the homeserver retries, and replays are recognised after restarts.
    """

    def __init__(
        self,
        settings: Settings,
        store_transaction: StoreTransaction,
        keep_event: Callable[[dict[str, Any]], bool],
        is_ghost: IsGhost,
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        matrix = settings.matrix
        super().__init__(
            server=matrix.homeserver_url,
            domain=matrix.server_name,
            as_token=matrix.as_token,
            hs_token=matrix.hs_token,
            bot_localpart=matrix.bot_localpart,
            id=matrix.appservice_id,
            state_store=MemoryASStateStore(),
            log=logging.getLogger("mssbridge.matrix.mautrix"),
            bridge_name="mssbridge",
        )
        self._store_transaction = store_transaction
        self._keep_event = keep_event
        self._is_ghost = is_ghost
        self._on_refused = on_refused  # the homeserver now backs off: ask it to resend
        # mautrix awaits query_user but annotates it as returning JSON synchronously.
        self.query_user = cast(Callable[[UserID], JSON], self._query_user_handler)

    def _check_token(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        token = token or request.rel_url.query.get("access_token", "")
        return hmac.compare_digest(token.encode(), self.hs_token.encode())

    async def _http_handle_transaction(self, request: web.Request) -> web.Response:
        if not self._check_token(request):
            return _json_error(403, "M_FORBIDDEN", "bad or missing hs_token")
        txn_id = request.match_info["transaction_id"]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):  # JSON nested too deeply
            return _json_error(400, "M_NOT_JSON", "body is not JSON")
        events = body.get("events") if isinstance(body, dict) else None
        if not isinstance(events, list):
            return _json_error(400, "M_BAD_JSON", "missing events list")
        kept = [e for e in events if isinstance(e, dict) and self._keep_event(e)]
        try:
            stored = await self._store_transaction(txn_id, kept)
        except Exception as exc:
            if is_store_unavailable(exc):  # down, locked, full: expected, no traceback
                log.warning(
                    "cannot store transaction %s (store unavailable: %s); the homeserver "
                    "will retry",
                    txn_id,
                    type(exc).__name__,
                )
            else:
                log.exception("cannot store transaction %s; the homeserver will retry", txn_id)
            self._on_refused()
            return _json_error(500, "M_UNKNOWN", "transaction not stored, retry later")
        log.debug("transaction %s: %d events, %d stored", txn_id, len(events), stored)
        return web.json_response({})

    async def _query_user_handler(self, user_id: UserID) -> dict[str, Any] | None:
        """The homeserver asks whether a ghost exists: register it when its id is valid."""
        if not self._is_ghost(user_id):
            return None
        await self.intent.user(user_id).ensure_registered()
        return {"user_id": user_id}
