"""The whitelist decision: listed domains only, the patients' domain on purpose, no list no mail."""

from __future__ import annotations

import pytest

from mssbridge.errors import PolicyViolation
from mssbridge.policy.whitelist import (
    NOT_LISTED,
    PATIENT_NOT_ALLOWED,
    WhitelistRules,
    check_recipients,
    refusal_reason,
)

LISTED = {"chu-a.mssante.fr", "patient.mssante.fr"}
ENFORCED = WhitelistRules()


@pytest.mark.parametrize(
    ("address", "rules", "reason"),
    [
        ("dr.x@chu-a.mssante.fr", ENFORCED, None),
        ("Dr.X@CHU-A.MSSANTE.FR.", ENFORCED, None),
        ("dr.x@autre.mssante.fr", ENFORCED, NOT_LISTED),
        ("dr.x@chu-a.mssante.fr.evil.example", ENFORCED, NOT_LISTED),
        ("p@patient.mssante.fr", ENFORCED, PATIENT_NOT_ALLOWED),
        ("p@patient.mssante.fr", WhitelistRules(allow_patient_domain=True), None),
        ("dr.x@autre.mssante.fr", WhitelistRules(enforce=False), None),
    ],
)
def test_refusal_reason(address: str, rules: WhitelistRules, reason: str | None) -> None:
    assert refusal_reason(address, LISTED, rules) == reason
    assert refusal_reason(address, LISTED.__contains__, rules) == reason


def test_every_refused_address_is_named_with_its_reason() -> None:
    with pytest.raises(PolicyViolation) as caught:
        check_recipients(
            ["ok@chu-a.mssante.fr", "a@autre.example.fr", "p@patient.mssante.fr"],
            LISTED,
            ENFORCED,
            list_imported=True,
        )
    exc = caught.value
    assert exc.code == "5.7.1"
    assert f"a@autre.example.fr ({NOT_LISTED})" in exc.user_message
    assert f"p@patient.mssante.fr ({PATIENT_NOT_ALLOWED})" in exc.user_message
    assert "ok@chu-a.mssante.fr" not in exc.user_message
    assert "autre.example.fr" not in str(exc)  # the log line carries a count, not addresses


def test_no_list_refuses_everything_and_says_what_to_run() -> None:
    with pytest.raises(PolicyViolation, match="mssbridge whitelist import") as caught:
        check_recipients(["ok@chu-a.mssante.fr"], LISTED, ENFORCED, list_imported=False)
    assert "« mssbridge whitelist import FICHIER »" in caught.value.user_message
    assert caught.value.code == "5.7.1"
    check_recipients(["x@y.fr"], set(), WhitelistRules(enforce=False), list_imported=False)


def test_listed_recipients_pass() -> None:
    check_recipients(
        ["a@chu-a.mssante.fr", "b@chu-a.mssante.fr"], LISTED, ENFORCED, list_imported=True
    )
