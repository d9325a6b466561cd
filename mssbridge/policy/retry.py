"""When to try a failed item again: exponential backoff until a deadline, like an MTA."""

from __future__ import annotations


def next_delay(attempts: int, first_delay: float, max_delay: float) -> float:
    """Delay before the attempt after ``attempts`` failures: doubling, capped."""
    return float(min(max_delay, first_delay * (2 ** min(attempts, 30))))


def gives_up(created_at: float, now: float, give_up_after: float) -> bool:
    """True once an item has been failing for longer than the deadline."""
    return now - created_at >= give_up_after
