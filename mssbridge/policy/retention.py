"""What the retention purge removes and from when: pure selection, no I/O (docs/retention.md).

Each :class:`PurgeKind` names one set of rows: a table, the states it applies to, the time
column that ages them and which period applies. :func:`cutoffs` turns "now" and the
policy into one cut-off instant per kind; rows strictly older than it go.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DAY = 86_400.0
# Appservice transaction ids only guard against a homeserver replaying a transaction, which
# it does within minutes or hours: a week is plenty.
MATRIX_TXN_DAYS = 7


class PurgeKind(StrEnum):
    """One kind of purged rows (also the label of counts, audit rows and metrics)."""

    OUTBOX = "outbox"  # Matrix events relayed (done) or withdrawn (dropped)
    INBOX = "inbox"  # mails relayed or dropped (own copies): row and mailbox copy
    DELIVERY = "delivery"  # gateway mode: mails delivered (done) or given up (dropped)
    OUTBOX_REJECTED = "outbox_rejected"  # refused or shunted events
    INBOX_REJECTED = "inbox_rejected"  # refused or shunted mails: row and mailbox copy
    DELIVERY_REJECTED = "delivery_rejected"  # gateway mode: refused or shunted deliveries
    MAP_OUT = "map_out"  # event ↔ Message-ID pairs of mails sent
    MAP_IN = "map_in"  # pairs of mails posted by ghosts: redacted in Matrix first
    MATRIX_TXN = "matrix_txn"
    # Subject and patient context of conversations silent for the period: blanked, the row
    # stays (it threads a late reply).
    PORTAL_TEXT = "portal_text"
    AUDIT = "audit"


class Period(StrEnum):
    CONTENT = "content"
    REJECTED = "rejected"
    AUDIT = "audit"
    MATRIX_TXN = "matrix_txn"


PERIOD_OF: dict[PurgeKind, Period] = {
    PurgeKind.OUTBOX: Period.CONTENT,
    PurgeKind.INBOX: Period.CONTENT,
    PurgeKind.DELIVERY: Period.CONTENT,
    PurgeKind.OUTBOX_REJECTED: Period.REJECTED,
    PurgeKind.INBOX_REJECTED: Period.REJECTED,
    PurgeKind.DELIVERY_REJECTED: Period.REJECTED,
    PurgeKind.MAP_OUT: Period.CONTENT,
    PurgeKind.MAP_IN: Period.CONTENT,
    PurgeKind.MATRIX_TXN: Period.MATRIX_TXN,
    PurgeKind.AUDIT: Period.AUDIT,
    PurgeKind.PORTAL_TEXT: Period.CONTENT,
}
# Kinds whose rows also have a copy in the bridge's mailbox, expunged before the rows go.
MAILBOX_KINDS = frozenset({PurgeKind.INBOX, PurgeKind.INBOX_REJECTED})
# Kinds whose rows name Matrix events that the bridge redacts before the rows go.
MATRIX_KINDS = frozenset({PurgeKind.MAP_IN})


@dataclass(frozen=True)
class RetentionPolicy:
    """Periods in days (``[retention]``)."""

    content_days: int = 90
    audit_days: int = 183
    rejected_days: int = 30
    matrix_txn_days: int = MATRIX_TXN_DAYS

    def days(self, period: Period) -> int:
        return {
            Period.CONTENT: self.content_days,
            Period.REJECTED: self.rejected_days,
            Period.AUDIT: self.audit_days,
            Period.MATRIX_TXN: self.matrix_txn_days,
        }[period]

    @property
    def room_max_lifetime_ms(self) -> int:
        """``m.room.retention`` ``max_lifetime`` of portal rooms: the content period."""
        return int(self.content_days * DAY * 1000)


def cutoffs(now: float, policy: RetentionPolicy) -> dict[PurgeKind, float]:
    """For each kind, the instant before which its rows are past retention."""
    if now <= 0:
        raise ValueError("now must be a positive timestamp")
    return {kind: now - policy.days(period) * DAY for kind, period in PERIOD_OF.items()}


def is_past(kind: PurgeKind, at: float, now: float, policy: RetentionPolicy) -> bool:
    """Whether a row of ``kind`` stamped ``at`` is past retention at ``now``."""
    return at < cutoffs(now, policy)[kind]


def summary(counts: dict[PurgeKind, int]) -> str:
    """``outbox=3 inbox=1 …`` for logs (counts only, never content)."""
    return " ".join(f"{kind}={counts.get(kind, 0)}" for kind in PurgeKind)
