"""End-to-end fixtures: the lab world (PKI, Postfix, Dovecot, Synapse) and the daemon process."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mssbridge.lab.bridge_process import BridgeProcess
from mssbridge.lab.correspondent import Correspondent
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import TestPki, generate_test_pki
from mssbridge.lab.world import (
    BRIDGE_MAILBOX,
    CLIENT_NAMES,
    CORRESPONDENT,
    MAIL_DOMAINS,
    write_bridge_config,
)

LAB_MAIL_PASSWORD = "lab-mail-password"


@dataclass
class World:
    pki: TestPki
    mail: MailLab
    correspondent: Correspondent


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    directory = tmp_path_factory.mktemp("world")
    pki = generate_test_pki(directory / "pki", client_names=CLIENT_NAMES)
    lab = MailLab(directory / "mail", pki, MAIL_DOMAINS, LAB_MAIL_PASSWORD)
    lab.start()
    try:
        yield World(
            pki=pki,
            mail=lab,
            correspondent=Correspondent(
                CORRESPONDENT, lab, pki.client(CORRESPONDENT), name="Dr Gregory House"
            ),
        )
    finally:
        lab.stop()


@pytest.fixture
def bridge_factory(world: World, synapse_lab, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Builds a bridge process for this test (config via ``init``); stops it afterwards."""
    made: list[BridgeProcess] = []

    def make(
        *,
        invite: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
        auth_method: str = "external",
        imap_security: str = "starttls",
    ) -> BridgeProcess:
        config = write_bridge_config(
            tmp_path / f"bridge{len(made)}" / "config.toml",
            world.pki,
            world.mail,
            homeserver_url=synapse_lab.url,
            as_token=synapse_lab.as_token,
            hs_token=synapse_lab.hs_token,
            appservice_port=synapse_lab.appservice_port,
            invite=invite,
            extra=extra,
            auth_method=auth_method,
            imap_security=imap_security,
        )
        bridge = BridgeProcess(config, synapse_lab.appservice_port, config.parent / "bridge.log")
        made.append(bridge)
        return bridge

    yield make
    for bridge in made:
        bridge.stop()


__all__ = ["BRIDGE_MAILBOX", "BridgeProcess", "World"]
