"""The Synapse lab: real users, rooms, files, and appservice transactions on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from fixtures.synapse import SynapseLabFixture

from mssbridge.lab.matrix_client import LabMatrixUser, text_body
from mssbridge.lab.synapse import SynapseLab, SynapseLabError

pytestmark = pytest.mark.integration


@dataclass
class FakeAppservice:
    """Records what Synapse pushes to the appservice URL."""

    authorizations: list[str | None] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def transaction(self, request: web.Request) -> web.Response:
        self.authorizations.append(request.headers.get("Authorization"))
        self.events.extend((await request.json()).get("events", []))
        self.arrived.set()
        return web.json_response({})

    async def wait_for(self, body: str, timeout: float = 20.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if text_body(event) == body:
                        return event
                self.arrived.clear()
                await self.arrived.wait()


@pytest.fixture
async def fake_appservice(synapse_lab: SynapseLabFixture) -> AsyncIterator[FakeAppservice]:
    appservice = FakeAppservice()
    app = web.Application()
    app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", appservice.transaction)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", synapse_lab.appservice_port).start()
    try:
        yield appservice
    finally:
        await runner.cleanup()


async def test_room_message_reaches_the_appservice(
    synapse_lab: SynapseLabFixture, fake_appservice: FakeAppservice
) -> None:
    assert synapse_lab.server_name == "hospital.test"
    user_id, token = synapse_lab.make_user("alice")
    assert user_id == "@alice:hospital.test"
    assert synapse_lab.make_user("alice") == (user_id, token)
    ghost_id = synapse_lab.make_ghost("mss_x")
    assert ghost_id == "@mss_x:hospital.test"

    async with (
        LabMatrixUser(synapse_lab.url, token) as alice,
        LabMatrixUser(synapse_lab.url, synapse_lab.as_token, as_user=ghost_id) as ghost,
    ):
        assert alice.user_id == user_id
        room_id = await alice.create_room(invite=[ghost_id], name="Avis", is_direct=True)
        await ghost.join(room_id)
        event_id = await alice.send_text(room_id, "hello bridge", html="<b>hello</b> bridge")

        event = await fake_appservice.wait_for("hello bridge")
        assert event["event_id"] == event_id
        assert event["sender"] == user_id
        assert event["room_id"] == room_id
        assert event["content"]["formatted_body"] == "<b>hello</b> bridge"
        assert set(fake_appservice.authorizations) == {f"Bearer {synapse_lab.hs_token}"}

        members = await alice.joined_members(room_id)
        assert set(members) == {user_id, ghost_id}


async def test_two_users_exchange_text_and_files(synapse_lab: SynapseLabFixture) -> None:
    alice_id, alice_token = synapse_lab.make_user("alice")
    bob_id, _ = synapse_lab.make_user("bob")
    async with (
        LabMatrixUser(synapse_lab.url, alice_token, alice_id) as alice,
        await LabMatrixUser.login(synapse_lab.url, "bob", synapse_lab.password) as bob,
    ):
        assert bob.user_id == bob_id
        await bob.set_display_name("Dr Bob")
        assert await alice.get_display_name(bob_id) == "Dr Bob"

        room_id = await alice.create_room(invite=[bob_id], name="Staff")
        assert await bob.wait_for_invite(lambda room, _state: room == room_id) == room_id
        await bob.join(room_id)
        await alice.send_text(room_id, "first")
        pdf = b"%PDF-1.4 fake report\n" * 100
        file_event_id = await alice.send_file(room_id, "report.pdf", pdf, "application/pdf")
        png_event_id = await alice.send_file(room_id, "scan.png", b"\x89PNG fake", "image/png")

        first = await bob.wait_for_event(room_id, lambda e: text_body(e) == "first")
        assert first["sender"] == alice_id
        received = await bob.wait_for_event(room_id, lambda e: e["event_id"] == file_event_id)
        assert received["content"]["msgtype"] == "m.file"
        assert received["content"]["info"] == {"mimetype": "application/pdf", "size": len(pdf)}
        assert await bob.download(received["content"]["url"]) == pdf

        latest = await bob.messages(room_id, limit=5)
        assert latest[0]["event_id"] == png_event_id
        assert latest[0]["content"]["msgtype"] == "m.image"
        assert latest[1]["event_id"] == file_event_id


def test_missing_synapse_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MSSBRIDGE_SYNAPSE_PYTHON", str(tmp_path / "nowhere" / "python"))
    with pytest.raises(SynapseLabError, match="pip install matrix-synapse"):
        SynapseLab(tmp_path)


def test_missing_registration_is_refused_before_start(tmp_path: Path) -> None:
    lab = SynapseLab(tmp_path, appservice_files=[tmp_path / "absent.yaml"])
    with pytest.raises(SynapseLabError, match="does not exist"):
        lab.start()
    assert lab.pid is None
