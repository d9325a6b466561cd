"""``!mss start <name> <city>`` end to end: the directory lists two doctors, the user picks one,
the mail reaches that correspondent, and the ghost carries the directory's name both ways."""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import GHOST, body_contains, mails_matching, mentions, wait_ghost_events

from mssbridge.directory.extraction import DirectoryRow
from mssbridge.directory.synthetic import extraction_line, generate_file
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

# The lab correspondent as the directory knows him: not the name his mail client sends.
HOUSE = DirectoryRow(
    mailbox_type="PER",
    address=CORRESPONDENT,
    id_type="8",
    pp_id="10999000001",
    national_id="810999000001",
    civility="PR",
    family_name="HOUSE",
    given_name="Gregory",
    profession_code="10",
    profession_label="Médecin",
    know_how_label="Néphrologie",
    structure_name="Hôpital du Correspondant",
    city="LYON",
    postal_code="69003",
    department="69",
)
NAMESAKE = DirectoryRow(
    mailbox_type="PER",
    address="greta.house@medecin.mssante.fr",
    id_type="8",
    pp_id="10999000002",
    national_id="810999000002",
    civility="DR",
    family_name="House",
    given_name="Greta",
    profession_code="10",
    profession_label="Médecin",
    know_how_label="Médecine générale",
    city="LYON",
    postal_code="69003",
    department="69",
)
DIRECTORY_NAME = "Pr Gregory HOUSE (MSSanté)"


def _import_directory(bridge: BridgeProcess, directory: Path) -> None:
    """A synthetic extraction holding the two doctors, imported with the operator's command."""
    path = directory / "Extraction_Correspondance_MSSante_202611220600.txt"
    generate_file(path, 2000, seed=7)
    with open(path, "a", encoding="utf-8") as out:
        out.writelines(extraction_line(row) + "\n" for row in (NAMESAKE, HOUSE))
    command = [sys.executable, "-m", "mssbridge", "directory", "import", str(path)]
    done = subprocess.run(
        [*command, "--config", str(bridge.config)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _bot_says(bot: str, fragment: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: (
        e.get("sender") == bot and fragment in str((e.get("content") or {}).get("body", ""))
    )


async def test_start_by_name_and_city_picks_a_doctor_and_mail_reaches_him(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess], tmp_path: Path
) -> None:
    bridge = bridge_factory()
    await asyncio.to_thread(_import_directory, bridge, tmp_path)
    bridge.start()
    bot = synapse_lab.bot_user_id
    _, token = synapse_lab.make_user("alice")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as alice:
        dm = await alice.create_room(invite=[bot], is_direct=True)
        await alice.wait_for_event(dm, _bot_says(bot, "!mss start"), timeout=30)
        await alice.send_text(dm, f"!mss start Dr House Lyon -- Avis néphro {tag}")
        listing = await alice.wait_for_event(dm, _bot_says(bot, "correspondants trouvés"), 30)
        body = listing["content"]["body"]
        assert listing["content"]["msgtype"] == "m.notice"
        assert body.startswith("2 correspondants trouvés pour « Dr House Lyon » :")
        [number] = re.findall(rf"^(\d+)\. .*— {re.escape(CORRESPONDENT)}$", body, re.M)
        assert "Pr Gregory HOUSE — Médecin, Néphrologie — Hôpital du Correspondant" in body
        assert NAMESAKE.address in body

        await alice.send_text(dm, f"!mss start {number}")
        portal = await alice.wait_for_invite(timeout=30)
        await alice.join(portal)
        opened = await alice.wait_for_event(dm, _bot_says(bot, "Conversation ouverte"), 30)
        assert CORRESPONDENT in opened["content"]["body"]
        members = await alice.joined_members(portal)
        assert members[GHOST]["display_name"] == DIRECTORY_NAME

        await alice.send_text(portal, f"Question {tag}")
        [mail] = await mails_matching(world, mentions(f"Question {tag}"), 1)
        assert str(mail["Subject"]) == f"Avis néphro {tag}"
        assert str(mail["To"]).endswith(CORRESPONDENT)

        # His reply signs "Dr Gregory House"; the room keeps the directory's name.
        await asyncio.to_thread(
            world.correspondent.send,
            BRIDGE_MAILBOX,
            f"Re: {mail['Subject']}",
            f"Réponse {tag}",
            in_reply_to=str(mail["Message-ID"]),
        )
        await wait_ghost_events(alice, portal, body_contains(f"Réponse {tag}"), 1)
        members = await alice.joined_members(portal)
        assert members[GHOST]["display_name"] == DIRECTORY_NAME
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert "directory look-up gave 2 candidate(s)" in log
    assert "Gregory" not in log and "Greta" not in log and tag not in log
