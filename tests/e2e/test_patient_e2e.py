"""A portal with a patient context: the correspondent receives IHE_XDM.ZIP and the PDF."""

from __future__ import annotations

import io
import secrets
import zipfile
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BridgeProcess, World
from test_relay_e2e import mails_matching, open_portal

from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import SERVER_NAME

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

INS = "280017505600150"
NIL = "MSSBRIDGE-LAB"


async def test_patient_context_sends_a_health_document(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory(
        extra=(
            f'access.patient_context=["@dora:{SERVER_NAME}"]',
            f"mssante.nil={NIL}",
            "mssante.name=CH du Lab",
            "mssante.finess=2A0000001",
            "mssante.ins_root=1.2.250.1.213.1.4.10",
        )
    )
    bridge.start()
    _, token = synapse_lab.make_user("dora")
    tag = secrets.token_hex(4)
    async with LabMatrixUser(synapse_lab.url, token) as dora:
        room = await open_portal(dora, f"Avis {tag}")
        await dora.send_text(
            room,
            f'!mss patient ins={INS} nom=Test-Échange prenoms="Jeanne Hélène" '
            "naissance=1980-01-01 sexe=F lieu=75056 qualifiee=oui",
        )
        await dora.wait_for_event(
            room,
            lambda e: "TEST-ÉCHANGE" in str((e.get("content") or {}).get("body", "")),
            timeout=30,
        )
        await dora.send_text(room, f"Plaie propre {tag}")
        [mail] = await mails_matching(
            world, lambda m: f"Plaie propre {tag}" in str(m.get_body(("plain",))), 1
        )
        assert str(mail["Subject"]).startswith("XDM/1.0/DDM+")
        assert mail["X-MSS-NIL"] == NIL and mail["X-MSS-INS"] == "O"
        files = {p.get_filename(): p.get_content() for p in mail.iter_attachments()}
        with zipfile.ZipFile(io.BytesIO(files["IHE_XDM.ZIP"])) as archive:
            assert INS.encode() in archive.read("IHE_XDM/SUBSET01/DOC0001.XML")
        assert any(str(name).endswith("_TEST_ECHANGE_Jeanne.pdf") for name in files)
    assert bridge.stop() == 0
    log = bridge.log.read_text()
    assert tag not in log and INS not in log and "Jeanne" not in log
