"""Secured SMTP sessions kept open a few seconds per domain: the next mail skips the handshake."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiosmtplib

from mssbridge.mail.smtp_out import _quit

IDLE_SECONDS = 10.0


@dataclass
class _Idle:
    smtp: aiosmtplib.SMTP
    host: str
    since: float


class SessionCache:
    """Idle sessions by domain, each already past STARTTLS and the DN check for that domain.

    A session is handed out once at a time, checked alive with NOOP first, and closed (QUIT)
    after ``idle_seconds`` unused, or when more than ``per_domain`` are idle for one domain.
    Only a session whose transaction ended normally is given back.
    """

    def __init__(self, idle_seconds: float = IDLE_SECONDS, per_domain: int = 4) -> None:
        self.idle_seconds = idle_seconds
        self.per_domain = per_domain
        self._idle: dict[str, list[_Idle]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.reused = 0

    async def take(self, domain: str) -> tuple[aiosmtplib.SMTP, str] | None:
        """An open session for ``domain`` and the host it reaches, or None."""
        entries = self._idle.get(domain, [])
        while entries:
            entry = entries.pop()
            if time.monotonic() - entry.since >= self.idle_seconds or not entry.smtp.is_connected:
                self._close(entry.smtp)
                continue
            try:
                await entry.smtp.noop()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                entry.smtp.close()
                continue
            self.reused += 1
            return entry.smtp, entry.host
        return None

    def give(self, domain: str, smtp: aiosmtplib.SMTP, host: str) -> None:
        """Keep a session whose last transaction completed, for the next mail to ``domain``."""
        entries = self._idle.setdefault(domain, [])
        if len(entries) >= self.per_domain:
            self._close(smtp)
            return
        entries.append(_Idle(smtp, host, time.monotonic()))
        asyncio.get_running_loop().call_later(self.idle_seconds, self._expire, domain)

    def idle(self, domain: str) -> int:
        return len(self._idle.get(domain, []))

    def _expire(self, domain: str) -> None:
        now = time.monotonic()
        entries = self._idle.get(domain, [])
        old = [e for e in entries if now - e.since >= self.idle_seconds - 0.05]
        for entry in old:
            entries.remove(entry)
            self._close(entry.smtp)

    def _close(self, smtp: aiosmtplib.SMTP) -> None:
        task = asyncio.ensure_future(_quit(smtp))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        """QUIT every idle session (the daemon is stopping)."""
        for entries in self._idle.values():
            for entry in entries:
                self._close(entry.smtp)
            entries.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
