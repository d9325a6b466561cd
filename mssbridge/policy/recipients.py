"""Gateway recipients: which Matrix user an address of the chat domain reaches (pure)."""

from __future__ import annotations

import enum
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass

from mssbridge.policy.access import AccessRules, may_use_bridge

# Local parts the default rule turns into Matrix localparts as they are (lower case): the
# Matrix user-id grammar, without the characters that mean something else in an address.
_LOCALPART_RE = re.compile(r"[a-z0-9._=/-]{1,64}")


class Outcome(enum.Enum):
    """Why an envelope recipient is accepted or refused (the log says which, the peer not)."""

    USER = "user"
    OTHER_DOMAIN = "other domain"  # relaying is never offered
    UNMAPPED = "no rule maps it"
    RESERVED = "names the bridge's bot or a ghost"
    NOT_ALLOWED = "user may not use the bridge (access.users)"


@dataclass(frozen=True)
class RecipientRule:
    """A local-part pattern (fnmatch, case-insensitive) and the Matrix user it reaches."""

    local_part: str
    user: str


@dataclass(frozen=True)
class RecipientMap:
    """The ``[gateway]`` settings that map recipients, and the bridge's own localparts."""

    domain: str
    server_name: str
    rules: Sequence[RecipientRule] = ()
    default_rule: bool = True
    bot_localpart: str = "mss_bot"
    ghost_prefix: str = "mss_"


@dataclass(frozen=True)
class Resolved:
    outcome: Outcome
    user: str | None = None


def split_address(address: str) -> tuple[str, str]:
    """Local part and lower-case domain (trailing dot removed); the local part as written."""
    local, sep, domain = address.strip().rpartition("@")
    if not sep:
        return address.strip(), ""
    return local, domain.lower().rstrip(".")


def _is_reserved(user: str, recipients: RecipientMap) -> bool:
    localpart = user[1:].partition(":")[0]
    server = user.partition(":")[2]
    if server != recipients.server_name:
        return False
    return localpart == recipients.bot_localpart or localpart.startswith(recipients.ghost_prefix)


def resolve(address: str, recipients: RecipientMap, access: AccessRules) -> Resolved:
    """The Matrix user that mail to ``address`` reaches, or why none does.

    Configured rules come first (the first match wins), then the default rule
    ``<local part>@<domain>`` → ``@<local part>:<server name>``. Whichever rule maps it,
    the user must be allowed to use the bridge, and may not be the bot or a ghost: mail
    cannot speak for the bridge's own users.
    """
    local, domain = split_address(address)
    if domain != recipients.domain or not local:
        return Resolved(Outcome.OTHER_DOMAIN)
    folded = local.lower()
    user = next(
        (
            rule.user
            for rule in recipients.rules
            if fnmatch.fnmatchcase(folded, rule.local_part.lower())
        ),
        None,
    )
    if user is None and recipients.default_rule and _LOCALPART_RE.fullmatch(folded):
        user = f"@{folded}:{recipients.server_name}"
    if user is None:
        return Resolved(Outcome.UNMAPPED)
    if _is_reserved(user, recipients):
        return Resolved(Outcome.RESERVED)
    if not may_use_bridge(user, access):
        return Resolved(Outcome.NOT_ALLOWED)
    return Resolved(Outcome.USER, user)
