"""The appservice endpoint against a real store: token check, store before 200, replays, 500s."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from fixtures.settings import offline_config

from mssbridge import config
from mssbridge.lab.synapse import free_port
from mssbridge.matrix.appservice import BridgeAppService
from mssbridge.policy.loops import BridgeIdentity, should_store_event
from mssbridge.security.atrest import Sealer, load_key
from mssbridge.store.db import make_engine, migrate
from mssbridge.store.repo import Store
from mssbridge.store.tables import Outbox

pytestmark = pytest.mark.integration

IDENTITY = BridgeIdentity("hospital.test", "mss_bot", "mss_", "bal@chu-test.mssante.fr")


def _message(event_id: str, sender: str = "@alice:hospital.test") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "room_id": "!r:hospital.test",
        "sender": sender,
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "bonjour"},
    }


class Endpoint:
    def __init__(self, url: str, hs_token: str, store: Store, service: BridgeAppService) -> None:
        self.url, self.hs_token, self.store, self.service = url, hs_token, store, service
        self.fail_store = False
        self.refusals: list[int] = []

    async def put(
        self,
        txn: str,
        events: Sequence[dict[str, Any]],
        token: str | None = None,
        body: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token if token is not None else self.hs_token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.put(
                f"{self.url}/_matrix/app/v1/transactions/{txn}",
                headers=headers,
                data=body if body is not None else None,
                json=None if body is not None else {"events": list(events)},
            ) as response,
        ):
            return response.status, await response.json(content_type=None)


@pytest.fixture
async def endpoint(database_url: str, tmp_path: Path) -> AsyncIterator[Endpoint]:
    port = free_port()
    path = tmp_path / "config.toml"
    offline_config(
        path,
        "matrix.server_name=hospital.test",
        f"matrix.listen_port={port}",
        "mailbox.address=bal@chu-test.mssante.fr",
    )
    settings = config.load(path)
    engine = make_engine(database_url)
    await migrate(engine)
    store = Store(engine, Sealer(load_key(settings.bridge.key_file)))
    holder: dict[str, Endpoint] = {}

    async def store_transaction(txn: str, events: Sequence[dict[str, Any]]) -> int:
        if holder["endpoint"].fail_store:
            raise OSError("disk full")
        return await store.store_transaction(txn, events)

    service = BridgeAppService(
        settings,
        store_transaction,
        lambda e: should_store_event(e, IDENTITY),
        lambda user_id: False,
        on_refused=lambda: holder["endpoint"].refusals.append(1),
    )
    await service.start("127.0.0.1", port)
    holder["endpoint"] = Endpoint(
        f"http://127.0.0.1:{port}", settings.matrix.hs_token, store, service
    )
    yield holder["endpoint"]
    await service.stop()
    await engine.dispose()


async def test_bad_or_missing_token_is_refused(endpoint: Endpoint) -> None:
    status, body = await endpoint.put("t1", [_message("$1")], token="wrong")
    assert (status, body["errcode"]) == (403, "M_FORBIDDEN")
    status, _ = await endpoint.put("t1", [_message("$1")], token="")
    assert status == 403
    assert await endpoint.store.rows(Outbox, ["pending"]) == []


async def test_events_are_stored_before_the_200_and_replays_ignored(endpoint: Endpoint) -> None:
    events = [
        _message("$1"),
        _message("$2", sender="@mss_bot:hospital.test"),
        {"type": "m.typing", "content": {}},
    ]
    assert (await endpoint.put("t1", events))[0] == 200
    rows = await endpoint.store.rows(Outbox, ["pending"])
    assert [r.event_id for r in rows] == ["$1"]  # the bot's own event is never stored
    assert (await endpoint.put("t1", events))[0] == 200  # a replay is acknowledged ...
    assert len(await endpoint.store.rows(Outbox, ["pending"])) == 1  # ... and not stored again


async def test_store_failure_answers_500_so_the_homeserver_retries(endpoint: Endpoint) -> None:
    assert (await endpoint.put("t8", [_message("$8")]))[0] == 200
    assert endpoint.refusals == []
    endpoint.fail_store = True
    status, body = await endpoint.put("t9", [_message("$9")])
    assert (status, body["errcode"]) == (500, "M_UNKNOWN")
    assert endpoint.refusals == [1]  # told, so that the homeserver is asked to resend
    endpoint.fail_store = False
    assert (await endpoint.put("t9", [_message("$9")]))[0] == 200
    assert [r.event_id for r in await endpoint.store.rows(Outbox, ["pending"])] == ["$8", "$9"]


async def test_malformed_bodies_get_400(endpoint: Endpoint) -> None:
    assert (await endpoint.put("t2", [], body=b"not json"))[0] == 400
    assert (await endpoint.put("t3", [], body=b'{"no_events": 1}'))[0] == 400


async def _request(
    endpoint: Endpoint, method: str, path: str, token: str | None = None, **kwargs: Any
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, endpoint.url + path, headers=headers, **kwargs) as response,
    ):
        return response.status, await response.text()


@pytest.mark.parametrize(
    "path",
    [
        "/_matrix/app/v1/users/@mss_x=y.fr:hospital.test",
        "/_matrix/app/v1/rooms/%23alias:hospital.test",
        "/users/@mss_x=y.fr:hospital.test",  # legacy unprefixed routes of mautrix
        "/rooms/%23alias:hospital.test",
    ],
)
async def test_queries_need_the_hs_token(endpoint: Endpoint, path: str) -> None:
    for token in (None, "", "wrong", endpoint.hs_token + "x", endpoint.hs_token[:-1]):
        assert (await _request(endpoint, "GET", path, token))[0] == 401
    wrong_query = await _request(endpoint, "GET", path + "?access_token=wrong")
    assert wrong_query[0] == 401
    # the right token reaches the handler: nothing known here, so 404
    assert (await _request(endpoint, "GET", path, endpoint.hs_token))[0] == 404


async def test_ping_and_transactions_need_the_hs_token(endpoint: Endpoint) -> None:
    ping = "/_matrix/app/v1/ping"
    body = {"transaction_id": "p1"}
    assert (await _request(endpoint, "POST", ping, "wrong", json=body))[0] == 401
    assert (await _request(endpoint, "POST", ping, None, json=body))[0] == 401
    assert (await _request(endpoint, "POST", ping, endpoint.hs_token, json=body))[0] == 200
    status, _ = await _request(
        endpoint, "PUT", "/transactions/t1", "wrong", json={"events": [_message("$1")]}
    )
    assert status == 403
    assert await endpoint.store.rows(Outbox, ["pending"]) == []


async def test_the_token_check_is_the_constant_time_one(endpoint: Endpoint) -> None:
    """mautrix's own check compares with ``!=``; every handler must go through ours."""
    from mautrix.appservice.as_handler import AppServiceServerMixin

    assert type(endpoint.service)._check_token is not AppServiceServerMixin._check_token
    assert "compare_digest" in BridgeAppService._check_token.__code__.co_names


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/", 404),
        ("GET", "/_matrix/app/v1/unknown", 404),
        ("POST", "/_matrix/app/v1/transactions/t1/x", 404),
        ("GET", "/_matrix/client/v3/sync", 404),
        ("GET", "/_matrix/app/v1/transactions/t1", 405),
        ("POST", "/_matrix/app/v1/transactions/t1", 405),
        ("DELETE", "/_matrix/app/v1/transactions/t1", 405),
        ("PUT", "/_matrix/app/v1/users/@a:hospital.test", 405),
        ("POST", "/_matrix/app/v1/rooms/%23a:hospital.test", 405),
        ("GET", "/_matrix/app/v1/ping", 405),
    ],
)
async def test_anything_else_is_refused(
    endpoint: Endpoint, method: str, path: str, status: int
) -> None:
    assert (await _request(endpoint, method, path, endpoint.hs_token))[0] == status


async def test_only_the_probes_answer_without_a_token_and_they_say_nothing(
    endpoint: Endpoint,
) -> None:
    for path in ("/_matrix/mau/live", "/_matrix/mau/ready"):
        status, text = await _request(endpoint, "GET", path)
        assert status in (200, 500) and text == "{}"
