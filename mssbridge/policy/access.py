"""Who may use the bridge from Matrix: exact user ids, ``:server`` suffixes or ``*``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def is_allowed(user_id: str, allowed: Iterable[str]) -> bool:
    """True when ``user_id`` matches an entry (exact id, ``:server`` suffix or ``*``)."""
    for entry in allowed:
        if entry == "*" or entry == user_id:
            return True
        if entry.startswith(":") and user_id.endswith(entry):
            return True
    return False


@dataclass(frozen=True)
class AccessRules:
    """Who may use the bridge, set a patient context, and run admin commands."""

    users: tuple[str, ...]
    patient_context: tuple[str, ...] = ()
    admins: tuple[str, ...] = ()


def access_rules(
    users: Sequence[str],
    legacy_users: Sequence[str],
    server_name: str,
    patient_context: Sequence[str] = (),
    admins: Sequence[str] = (),
) -> AccessRules:
    """Rules from the config: ``access.users``, else ``matrix.allowed_users``, else the
    bridge's own server; nobody sets a patient context or administers unless listed."""
    chosen = tuple(users) or tuple(legacy_users) or (f":{server_name}",)
    return AccessRules(chosen, tuple(patient_context), tuple(admins))


def is_admin(user_id: str, rules: AccessRules) -> bool:
    """Admins are listed explicitly; an empty list means nobody."""
    return is_allowed(user_id, rules.admins)


def may_use_bridge(user_id: str, rules: AccessRules) -> bool:
    """Users of the bridge, and its admins."""
    return is_allowed(user_id, rules.users) or is_admin(user_id, rules)


def may_set_patient_context(user_id: str, rules: AccessRules) -> bool:
    """Those listed in ``patient_context`` who may also use the bridge; empty means nobody."""
    return may_use_bridge(user_id, rules) and is_allowed(user_id, rules.patient_context)


def may_export_document(user_id: str, rules: AccessRules) -> bool:
    """``!mss export`` makes the user the legal authenticator of a health document: the same
    people as those who may set the patient context."""
    return may_set_patient_context(user_id, rules)
