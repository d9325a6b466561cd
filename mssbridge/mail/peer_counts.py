"""Open SMTP sessions per peer address, counted across the gateway's processes."""

from __future__ import annotations

import ctypes
import hashlib
import multiprocessing

from mssbridge.mail.smtp_in import PeerSessions

# Buckets per hash, and independent hashes: a count-min sketch. A peer's count is the
# smallest of its buckets, so it is over-counted only when other peers with open sessions
# share every one of its buckets (about (peers / WIDTH) ** DEPTH: 0.2 % with 200 peers).
SKETCH_WIDTH = 4096
SKETCH_DEPTH = 2
ROW_CELLS = SKETCH_WIDTH * SKETCH_DEPTH


def _buckets(address: str) -> list[int]:
    """The address's cell in each hash row (stable across processes, unlike ``hash``)."""
    digest = hashlib.blake2b(address.encode(), digest_size=4 * SKETCH_DEPTH).digest()
    return [
        depth * SKETCH_WIDTH + int.from_bytes(digest[4 * depth : 4 * depth + 4]) % SKETCH_WIDTH
        for depth in range(SKETCH_DEPTH)
    ]


class SharedPeerCounts:
    """One row of counters per process, in memory the gateway's processes share.

    Each process writes only its own row, so no lock is needed and a process that died is
    forgotten by clearing its row. Created by the daemon, handed to the workers it spawns.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        context = multiprocessing.get_context("spawn")
        self._cells = context.RawArray(ctypes.c_int32, processes * ROW_CELLS)

    def add(self, row: int, address: str, delta: int) -> None:
        cells = self._cells
        for bucket in _buckets(address):
            cells[row * ROW_CELLS + bucket] += delta

    def total(self, address: str) -> int:
        """Sessions of ``address`` open in every process (never fewer than there are)."""
        cells = self._cells
        return min(
            sum(cells[row * ROW_CELLS + bucket] for row in range(self.processes))
            for bucket in _buckets(address)
        )

    def clear(self, row: int) -> None:
        """Forget a process that ended: its sessions ended with it."""
        start = row * ROW_CELLS
        self._cells[start : start + ROW_CELLS] = [0] * ROW_CELLS


class SharedPeerSessions(PeerSessions):
    """The per-peer cap over every process: one more session than ``limit`` gets 421.

    Sessions opened at the same instant in two processes may both be admitted: the cap can
    be passed by one session per other process, for that instant only.
    """

    def __init__(self, limit: int, counts: SharedPeerCounts, row: int) -> None:
        super().__init__(limit)
        self.counts = counts
        self.row = row

    def admit(self, address: str) -> bool:
        if self.counts.total(address) >= self.limit or not super().admit(address):
            return False
        self.counts.add(self.row, address, 1)
        return True

    def release(self, address: str) -> None:
        super().release(address)
        self.counts.add(self.row, address, -1)
