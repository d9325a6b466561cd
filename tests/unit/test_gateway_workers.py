"""The pieces of gateway.processes that need no process: addresses, signals, the setting."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest
from pydantic import ValidationError

from mssbridge.config import GatewaySection
from mssbridge.flows.gateway_workers import (
    REFUSED,
    STORED,
    _RefusalCounts,
    _StoredSignal,
    listen_entries,
    refusal_counts,
)
from mssbridge.mail.peer_counts import SharedPeerCounts, SharedPeerSessions
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


async def test_refusals_are_sent_counted_once_per_turn_of_the_loop() -> None:
    ours, theirs = multiprocessing.Pipe()
    count = _RefusalCounts(ours)
    for code in ["5.7.0"] * 30 + ["5.7.1", "tls"]:
        count(code)
    await asyncio.sleep(0)
    assert theirs.poll(1)
    assert refusal_counts(theirs.recv_bytes()) == {"5.7.0": 30, "5.7.1": 1, "tls": 1}
    assert not theirs.poll(0.05)
    count("4.7.0")
    await asyncio.sleep(0)
    assert theirs.poll(1) and refusal_counts(theirs.recv_bytes()) == {"4.7.0": 1}


def test_refusal_counts_ignore_what_is_not_a_count() -> None:
    assert refusal_counts(STORED) == {}
    assert refusal_counts(REFUSED + b"[1, 2]") == {}
    assert refusal_counts(REFUSED + b"{not json") == {}
    assert refusal_counts(REFUSED + b'{"5.7.1": 2, "x": "3", "y": -1, "z": true}') == {"5.7.1": 2}


def test_shared_peer_sessions_cap_a_peer_over_every_process() -> None:
    counts = SharedPeerCounts(3)
    daemon, worker = SharedPeerSessions(3, counts, 0), SharedPeerSessions(3, counts, 2)
    assert daemon.admit("192.0.2.1") and worker.admit("192.0.2.1") and worker.admit("192.0.2.1")
    assert not daemon.admit("192.0.2.1") and not worker.admit("192.0.2.1")
    assert all(daemon.admit(f"198.51.100.{n}") for n in range(200))  # other peers: theirs
    assert counts.total("192.0.2.1") == 3 and counts.total("203.0.113.9") == 0
    worker.release("192.0.2.1")
    assert daemon.admit("192.0.2.1")
    counts.clear(2)  # the worker died: its session is gone with it
    assert counts.total("192.0.2.1") == 2 and counts.total("198.51.100.7") == 1


def test_processes_setting_defaults_to_one_and_is_bounded() -> None:
    assert GatewaySection().processes == 1
    assert GatewaySection(processes=4).processes == 4
    for wrong in (0, 65):
        with pytest.raises(ValidationError):
            GatewaySection(processes=wrong)
