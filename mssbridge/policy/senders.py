"""Gateway mode, outbound: a Matrix user's own address in the chat domain, and domain groups."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mssbridge.policy.access import AccessRules
from mssbridge.policy.recipients import Outcome, RecipientMap, resolve, split_address

# Shell-pattern characters: a rule with one of them names many addresses, not one.
_PATTERN_CHARS = frozenset("*?[")


def sender_address(user: str, recipients: RecipientMap, access: AccessRules) -> str | None:
    """The address in the chat domain that ``user`` writes from, or None when it has none.

    The inverse of :func:`mssbridge.policy.recipients.resolve`: a rule naming one literal
    local part for this user first (in order), then the default rule (``@local:server`` →
    ``local@domain``). An address is given only when mail to it comes back to the same user:
    replies must reach the writer, never someone a wider rule maps the address to.
    """
    candidates = [
        rule.local_part.lower()
        for rule in recipients.rules
        if rule.user == user and not _PATTERN_CHARS & set(rule.local_part)
    ]
    localpart, sep, server = user[1:].partition(":")
    if (
        recipients.default_rule
        and user.startswith("@")
        and sep
        and server == recipients.server_name
    ):
        candidates.append(localpart)
    for local in candidates:
        address = f"{local}@{recipients.domain}"
        found = resolve(address, recipients, access)
        if found.outcome is Outcome.USER and found.user == user:
            return address
    return None


@dataclass(frozen=True)
class DomainGroup:
    """The recipients of one mail that one domain's servers take, in the order given."""

    domain: str
    recipients: tuple[str, ...]


def by_domain(recipients: Iterable[str]) -> list[DomainGroup]:
    """Recipients grouped by lower-case domain, domains in order of first appearance.

    An address is kept once (compared without case); one without a domain is its own group
    with an empty domain name, for the caller to refuse.
    """
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for address in recipients:
        key = address.strip().lower()
        if key in seen:
            continue
        seen.add(key)
        _, domain = split_address(address)
        groups.setdefault(domain, []).append(address.strip())
    return [DomainGroup(domain, tuple(found)) for domain, found in groups.items()]
