"""The pieces of gateway.processes that need no process: addresses, signals, the setting."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest
from pydantic import ValidationError

from mssbridge.config import GatewaySection
from mssbridge.flows.gateway_workers import STORED, _StoredSignal, listen_entries
from mssbridge.mail.smtp_in import split_listen


def test_listen_entries_round_trip_through_split_listen() -> None:
    bound = [("127.0.0.1", 2525), ("::1", 40123)]
    entries = listen_entries(bound)
    assert entries == ("127.0.0.1:2525", "[::1]:40123")
    assert [split_listen(entry) for entry in entries] == bound


async def test_stored_signal_sends_once_per_turn_of_the_loop() -> None:
    ours, theirs = multiprocessing.Pipe()
    signal = _StoredSignal(ours)
    for _ in range(50):
        signal()
    await asyncio.sleep(0)
    assert theirs.poll(1) and theirs.recv_bytes() == STORED
    assert not theirs.poll(0.05)
    signal()
    await asyncio.sleep(0)
    assert theirs.poll(1) and theirs.recv_bytes() == STORED


def test_processes_setting_defaults_to_one_and_is_bounded() -> None:
    assert GatewaySection().processes == 1
    assert GatewaySection(processes=4).processes == 4
    for wrong in (0, 65):
        with pytest.raises(ValidationError):
            GatewaySection(processes=wrong)
