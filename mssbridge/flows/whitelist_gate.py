"""Applies the whitelist policy with the list in force in the store, before any network use."""

from __future__ import annotations

from collections.abc import Sequence

from mssbridge.config import Settings
from mssbridge.policy.whitelist import (
    WhitelistRules,
    check_recipients,
    domain_of,
    refusal_reason,
)
from mssbridge.store.repo import Store
from mssbridge.store.whitelist_repo import WhitelistRepo


def rules_of(settings: Settings) -> WhitelistRules:
    section = settings.whitelist
    return WhitelistRules(
        enforce=section.enforce, allow_patient_domain=section.allow_patient_domain
    )


async def ensure_whitelisted(store: Store, settings: Settings, recipients: Sequence[str]) -> None:
    """Raise PolicyViolation (5.7.1) unless mail may go to every recipient."""
    rules = rules_of(settings)
    if not rules.enforce:
        return
    repo = WhitelistRepo(store)
    imported = await repo.current() is not None
    listed = await repo.listed_among(domain_of(r) for r in recipients) if imported else set()
    check_recipients(recipients, listed, rules, list_imported=imported)


async def why_refused(store: Store, settings: Settings, address: str) -> str | None:
    """Why mail to ``address`` would be refused now (French, for a room), or None."""
    rules = rules_of(settings)
    if not rules.enforce:
        return None
    repo = WhitelistRepo(store)
    if await repo.current() is None:
        return "la liste blanche MSSanté n'a pas encore été importée sur cette passerelle"
    listed = await repo.listed_among([domain_of(address)])
    return refusal_reason(address, listed, rules)


async def whitelist_status(store: Store, settings: Settings, now: float) -> str:
    """One line for ``mssbridge check``; raises ValueError when mail cannot leave at all."""
    current = await WhitelistRepo(store).current()
    enforce = settings.whitelist.enforce
    if current is None:
        if enforce:
            raise ValueError("no whitelist imported: run `mssbridge whitelist import FILE`")
        return "not enforced (whitelist.enforce = false), none imported"
    age = (now - current.generated_at) / 86400
    summary = f"{current.domains} domains, generated {age:.0f} days ago"
    if not enforce:
        summary += ", not enforced (whitelist.enforce = false)"
    if age > settings.whitelist.max_age_days:
        return (
            f"WARNING older than {settings.whitelist.max_age_days} days: {summary}; "
            "import a newer list"
        )
    return summary
