"""sd_notify messages reach a real unix datagram socket, as systemd would receive them."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from mssbridge.sdnotify import Notifier


def test_ready_and_stopping_are_sent(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        notifier = Notifier(path)
        notifier.ready("relaying")
        notifier.stopping()
        assert server.recv(1024) == b"READY=1\nSTATUS=relaying"
        assert server.recv(1024).startswith(b"STOPPING=1\n")


def test_disabled_without_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")  # nothing to send to, and no error


async def test_watchdog_pings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "wd.sock")
    monkeypatch.setenv("WATCHDOG_USEC", "100000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.setblocking(False)
        task = asyncio.create_task(Notifier(path).keep_alive())
        await asyncio.sleep(0.12)
        task.cancel()
        pings = []
        while True:
            try:
                pings.append(server.recv(64))
            except BlockingIOError:
                break
        assert pings.count(b"WATCHDOG=1") >= 2
