"""systemd service notifications (sd_notify protocol): ready, stopping, status, watchdog."""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger("mssbridge.sdnotify")


class Notifier:
    """Sends datagrams to $NOTIFY_SOCKET when systemd started us with Type=notify; else no-op."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):  # abstract namespace socket
            address = "\0" + address[1:]
        self.address = address

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        if not self.enabled:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            log.warning("cannot notify systemd: %s", exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=finishing work in progress")

    @staticmethod
    def watchdog_interval() -> float | None:
        """Half of WatchdogSec (seconds), when systemd asks for keep-alives for this process."""
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        if not usec.isdigit() or (pid and pid != str(os.getpid())):
            return None
        return int(usec) / 2_000_000

    async def keep_alive(self) -> None:
        """Ping the watchdog while the event loop turns (a stuck loop stops the pings)."""
        interval = self.watchdog_interval()
        if not self.enabled or interval is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)
