"""Gateway mode, outbound, pure parts: a user's own address, recipients by domain, config."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mssbridge.config import GatewaySection
from mssbridge.mail.mx import nameserver, resolver
from mssbridge.policy.access import access_rules
from mssbridge.policy.recipients import RecipientMap, RecipientRule, resolve
from mssbridge.policy.senders import DomainGroup, by_domain, sender_address

DOMAIN = "chat.chu-exemple.mssante.fr"
SERVER = "hospital.example"
RULES = (
    RecipientRule("postmaster", f"@admin:{SERVER}"),
    RecipientRule("cardio.*", f"@secretariat.cardio:{SERVER}"),
    RecipientRule("secretariat.cardio", f"@secretariat.cardio:{SERVER}"),
    RecipientRule("dr.capture", f"@someone.else:{SERVER}"),
)
MAP = RecipientMap(DOMAIN, SERVER, RULES)
EVERYONE = access_rules((), (), SERVER)


@pytest.mark.parametrize(
    ("user", "address"),
    [
        (f"@dr.martin:{SERVER}", f"dr.martin@{DOMAIN}"),
        # A literal rule names the user's address before the default rule.
        (f"@admin:{SERVER}", f"postmaster@{DOMAIN}"),
        # A pattern names many addresses: the literal rule of the same user is taken.
        (f"@secretariat.cardio:{SERVER}", f"secretariat.cardio@{DOMAIN}"),
        # Mail to dr.capture@ reaches someone else: that user writes from another address.
        (f"@someone.else:{SERVER}", f"dr.capture@{DOMAIN}"),
        # Users of another homeserver have no address in the chat domain.
        ("@dr.martin:ailleurs.example", None),
        # An address the default rule would give, but a rule maps to someone else.
        (f"@dr.capture:{SERVER}", None),
        # The bridge's own users never write from the chat domain.
        (f"@mss_bot:{SERVER}", None),
        (f"@mss_dr.house=chu.fr:{SERVER}", None),
        # Characters an address of the default rule cannot carry.
        (f"@a+b:{SERVER}", None),
        ("not-a-user-id", None),
    ],
)
def test_sender_address(user: str, address: str | None) -> None:
    assert sender_address(user, MAP, EVERYONE) == address


def test_sender_address_round_trips_through_the_recipient_rules() -> None:
    users = [f"@dr.martin:{SERVER}", f"@admin:{SERVER}", f"@secretariat.cardio:{SERVER}"]
    for user in users:
        address = sender_address(user, MAP, EVERYONE)
        assert address is not None
        assert resolve(address, MAP, EVERYONE).user == user


def test_no_default_rule_and_access_rules_are_respected() -> None:
    strict = RecipientMap(DOMAIN, SERVER, RULES, default_rule=False)
    assert sender_address(f"@dr.martin:{SERVER}", strict, EVERYONE) is None
    assert sender_address(f"@admin:{SERVER}", strict, EVERYONE) == f"postmaster@{DOMAIN}"
    only_admin = access_rules((f"@admin:{SERVER}",), (), SERVER)
    assert sender_address(f"@dr.martin:{SERVER}", MAP, only_admin) is None
    assert sender_address(f"@admin:{SERVER}", MAP, only_admin) == f"postmaster@{DOMAIN}"


def test_by_domain_groups_in_order_without_duplicates() -> None:
    groups = by_domain(
        [
            "a@un.mssante.fr",
            "b@deux.mssante.fr",
            "c@UN.mssante.fr.",
            "A@un.mssante.fr",
            "sans-domaine",
        ]
    )
    assert groups == [
        DomainGroup("un.mssante.fr", ("a@un.mssante.fr", "c@UN.mssante.fr.")),
        DomainGroup("deux.mssante.fr", ("b@deux.mssante.fr",)),
        DomainGroup("", ("sans-domaine",)),
    ]
    assert by_domain([]) == []


def test_outbound_config_keys() -> None:
    base = {"enabled": True, "domain": DOMAIN}
    assert GatewaySection(**base).outbound == "mailbox"
    relay = GatewaySection(**base, outbound="relay", relay="relais.chu.test:25")
    assert relay.relay == "relais.chu.test:25"
    with pytest.raises(ValidationError, match=r"relay \(HOST:PORT\) is required"):
        GatewaySection(**base, outbound="relay")
    with pytest.raises(ValidationError, match="HOST:PORT"):
        GatewaySection(**base, outbound="relay", relay="relais.chu.test")
    with pytest.raises(ValidationError, match="needs enabled = true"):
        GatewaySection(outbound="mx")
    with pytest.raises(ValidationError):
        GatewaySection(**base, outbound="smtp")
    with pytest.raises(ValidationError):
        GatewaySection(**base, max_per_domain=0)


def test_mx_resolver_config_keys() -> None:
    base = {"enabled": True, "domain": DOMAIN, "outbound": "mx"}
    assert GatewaySection(**base).nameservers == ()
    lab = GatewaySection(**base, nameservers=("127.0.0.1:5353", "[::1]:53", "10.0.0.53"))
    assert lab.mx_port == 25
    assert [nameserver(entry) for entry in lab.nameservers] == [
        ("127.0.0.1", 5353),
        ("::1", 53),
        ("10.0.0.53", 53),
    ]
    # A resolver is named by its address; a port other than 25 only with a named resolver.
    for wrong in ("dns.chu.test", "dns.chu.test:53", "127.0.0.1:0", "[::1", "127.0.0.1:x"):
        with pytest.raises(ValidationError, match="expected"):
            GatewaySection(**base, nameservers=(wrong,))
    with pytest.raises(ValidationError, match="mx_port other than 25"):
        GatewaySection(**base, mx_port=2525)
    assert GatewaySection(**base, nameservers=("127.0.0.1:5353",), mx_port=2525).mx_port == 2525


def test_named_resolver_asks_only_those_servers() -> None:
    chosen = resolver(["127.0.0.1:5353", "::1"], port=5300)
    assert [(str(s.address), s.port) for s in chosen.nameservers] == [  # type: ignore[union-attr]
        ("127.0.0.1", 5353),
        ("::1", 5300),
    ]
