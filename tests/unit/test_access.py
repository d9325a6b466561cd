"""Who may do what from Matrix: use the bridge, set a patient context, administer."""

from __future__ import annotations

import pytest

from mssbridge.policy.access import (
    access_rules,
    is_admin,
    may_set_patient_context,
    may_use_bridge,
)

RULES = access_rules(
    users=[":hospital.test", "@guest:partner.test"],
    legacy_users=["*"],
    server_name="hospital.test",
    patient_context=["@dr.a:hospital.test", "@outsider:evil.test"],
    admins=["@it:hospital.test", "@root:ops.test"],
)


@pytest.mark.parametrize(
    ("user", "use", "patient", "admin"),
    [
        ("@dr.a:hospital.test", True, True, False),
        ("@nurse:hospital.test", True, False, False),
        ("@guest:partner.test", True, False, False),
        ("@other:partner.test", False, False, False),
        ("@x:evilhospital.test", False, False, False),  # a suffix is a whole server name
        ("@outsider:evil.test", False, False, False),  # listed for patients, not a user
        ("@it:hospital.test", True, False, True),
        ("@root:ops.test", True, False, True),  # admins may use the bridge
    ],
)
def test_rules(user: str, use: bool, patient: bool, admin: bool) -> None:
    assert may_use_bridge(user, RULES) is use
    assert may_set_patient_context(user, RULES) is patient
    assert is_admin(user, RULES) is admin


@pytest.mark.parametrize(
    ("users", "legacy", "expected"),
    [
        ((), (), (":hospital.test",)),  # nothing configured: the bridge's own server
        ((), ("@a:h",), ("@a:h",)),  # matrix.allowed_users still honoured
        (("*",), ("@a:h",), ("*",)),  # access.users wins
    ],
)
def test_users_fall_back(
    users: tuple[str, ...], legacy: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    rules = access_rules(users, legacy, "hospital.test")
    assert rules.users == expected
    assert rules.admins == () and rules.patient_context == ()
    assert not is_admin("@anyone:hospital.test", rules)
    assert not may_set_patient_context("@anyone:hospital.test", rules)
