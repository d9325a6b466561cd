"""Whitelist policy: mail leaves only for domains of the signed MSSanté list (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from mssbridge.errors import PolicyViolation

PATIENT_DOMAIN = "patient.mssante.fr"
REFUSAL_CODE = "5.7.1"
NOT_LISTED = "domaine absent de la liste blanche MSSanté"
PATIENT_NOT_ALLOWED = (
    "messagerie des patients (Mon espace santé) non autorisée sur cette passerelle"
)
NO_LIST = (
    "la liste blanche MSSanté n'a jamais été importée sur cette passerelle ; aucun message ne "
    "part tant que l'administrateur n'a pas lancé « mssbridge whitelist import FICHIER »."
)

Listed = Callable[[str], bool] | Collection[str]


@dataclass(frozen=True)
class WhitelistRules:
    """The ``[whitelist]`` settings that decide."""

    enforce: bool = True
    allow_patient_domain: bool = False


def domain_of(address: str) -> str:
    """The domain of an address (or a bare domain), lower case, without a trailing dot."""
    return address.rsplit("@", 1)[-1].strip().lower().rstrip(".")


def refusal_reason(address: str, listed: Listed, rules: WhitelistRules) -> str | None:
    """Why mail to ``address`` may not leave, or None when it may."""
    if not rules.enforce:
        return None
    domain = domain_of(address)
    if domain == PATIENT_DOMAIN:
        return None if rules.allow_patient_domain else PATIENT_NOT_ALLOWED
    found = listed(domain) if callable(listed) else domain in listed
    return None if found else NOT_LISTED


def check_recipients(
    recipients: Sequence[str], listed: Listed, rules: WhitelistRules, *, list_imported: bool
) -> None:
    """Raise PolicyViolation (5.7.1) unless every recipient may receive mail.

    The message names each refused address and why; nothing is sent to anyone then.
    """
    if not rules.enforce:
        return
    if not list_imported:
        raise PolicyViolation(
            NO_LIST[0].upper() + NO_LIST[1:],
            code=REFUSAL_CODE,
            detail="no whitelist imported: run `mssbridge whitelist import FILE`",
        )
    refused = [
        (address, reason)
        for address in recipients
        if (reason := refusal_reason(address, listed, rules)) is not None
    ]
    if not refused:
        return
    names = ", ".join(f"{address} ({reason})" for address, reason in refused)
    label = "Adresse refusée" if len(refused) == 1 else "Adresses refusées"
    raise PolicyViolation(
        f"{label} : {names}. Le message n'a été envoyé à personne.",
        code=REFUSAL_CODE,
        detail=f"{len(refused)} recipient(s) outside the MSSanté whitelist",
    )
