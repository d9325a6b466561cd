"""In-memory directory state of a bridge process: pending ``start`` choices and known names.

Nothing here survives a restart, by design: a list of candidates is worth a few minutes,
and a name is looked up again when it is not known.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import StrEnum

from mssbridge.directory.lookup import PICK_WINDOW_SECONDS

MAX_PENDING = 1000
MAX_NAMES = 10_000
NAME_TTL_SECONDS = 3600.0  # a new import is seen within the hour


class PickError(StrEnum):
    """Why a pick gave no address."""

    NONE = "none"  # no list for this user in this room (or it expired)
    OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True)
class Pending:
    addresses: tuple[str, ...]
    subject: str
    expires_at: float


class PendingChoices:
    """Candidate lists waiting for ``start <n>``, one per (user, room), never shared."""

    def __init__(self, window: float = PICK_WINDOW_SECONDS, size: int = MAX_PENDING) -> None:
        self.window = window
        self.size = size
        self._lists: OrderedDict[tuple[str, str], Pending] = OrderedDict()

    def offer(
        self, user_id: str, room_id: str, addresses: tuple[str, ...], subject: str, now: float
    ) -> None:
        """Remember the list shown to ``user_id`` in ``room_id`` (replacing an older one)."""
        key = (user_id, room_id)
        self._lists.pop(key, None)
        self._lists[key] = Pending(addresses, subject, now + self.window)
        while len(self._lists) > self.size:
            self._lists.popitem(last=False)

    def pick(
        self, user_id: str, room_id: str, number: int, now: float
    ) -> tuple[str, str] | PickError:
        """(address, subject) of entry ``number`` (from 1).

        The list stays until it expires or a new search replaces it, so a command retried
        after a temporary failure picks the same address.
        """
        key = (user_id, room_id)
        pending = self._lists.get(key)
        if pending is None or pending.expires_at <= now:
            self._lists.pop(key, None)
            return PickError.NONE
        if not 1 <= number <= len(pending.addresses):
            return PickError.OUT_OF_RANGE
        return pending.addresses[number - 1], pending.subject

    def count(self, user_id: str, room_id: str) -> int:
        pending = self._lists.get((user_id, room_id))
        return len(pending.addresses) if pending else 0


class NameCache:
    """Directory names of addresses (None: the directory does not name it), for a while."""

    def __init__(self, ttl: float = NAME_TTL_SECONDS, size: int = MAX_NAMES) -> None:
        self.ttl = ttl
        self.size = size
        self._names: OrderedDict[str, tuple[str | None, float]] = OrderedDict()

    def get(self, address: str, now: float) -> tuple[bool, str | None]:
        """(known, name): ``known`` is False when the directory must be asked."""
        item = self._names.get(address)
        if item is None or item[1] <= now:
            return False, None
        self._names.move_to_end(address)
        return True, item[0]

    def put(self, address: str, name: str | None, now: float) -> None:
        self._names[address] = (name, now + self.ttl)
        self._names.move_to_end(address)
        while len(self._names) > self.size:
            self._names.popitem(last=False)


@dataclass
class DirectoryMemory:
    """What one bridge process keeps about the directory between two events."""

    choices: PendingChoices = field(default_factory=PendingChoices)
    names: NameCache = field(default_factory=NameCache)
