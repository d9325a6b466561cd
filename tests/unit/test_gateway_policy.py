"""Gateway mode's pure parts: recipient mapping, DN matching, replies, DATA reading, config."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from mssbridge.config import GatewaySection
from mssbridge.mail import smtp_replies as replies
from mssbridge.mail.smtp_data import DataReader, DataVerdict
from mssbridge.mail.smtp_in import PeerSessions, ServerLimits, split_listen, trace_header
from mssbridge.policy.access import access_rules
from mssbridge.policy.recipients import Outcome, RecipientMap, RecipientRule, resolve
from mssbridge.security.peer_dn import certificate_dn, dn_listed, parse_dn

DOMAIN = "chat.chu-exemple.mssante.fr"
SERVER = "hospital.example"
RULES = (
    RecipientRule("postmaster", f"@admin:{SERVER}"),
    RecipientRule("cardio.*", f"@secretariat.cardio:{SERVER}"),
    RecipientRule("ghost", f"@mss_x=y:{SERVER}"),
)
MAP = RecipientMap(DOMAIN, SERVER, RULES)
EVERYONE = access_rules((), (), SERVER)


# -- recipients -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "outcome", "user"),
    [
        (f"dr.martin@{DOMAIN}", Outcome.USER, f"@dr.martin:{SERVER}"),
        (f"Dr.Martin@{DOMAIN.upper()}.", Outcome.USER, f"@dr.martin:{SERVER}"),
        (f"postmaster@{DOMAIN}", Outcome.USER, f"@admin:{SERVER}"),
        (f"CARDIO.urgences@{DOMAIN}", Outcome.USER, f"@secretariat.cardio:{SERVER}"),
        (f"dr.martin@autre.{DOMAIN}", Outcome.OTHER_DOMAIN, None),
        ("dr.martin@chu-exemple.mssante.fr", Outcome.OTHER_DOMAIN, None),
        (f"@{DOMAIN}", Outcome.OTHER_DOMAIN, None),
        ("no-at-sign", Outcome.OTHER_DOMAIN, None),
        (f"a+tag@{DOMAIN}", Outcome.UNMAPPED, None),
        (f'"quoted part"@{DOMAIN}', Outcome.UNMAPPED, None),
        (f"{'x' * 65}@{DOMAIN}", Outcome.UNMAPPED, None),
        (f"mss_bot@{DOMAIN}", Outcome.RESERVED, None),
        (f"mss_dr.house=chu.fr@{DOMAIN}", Outcome.RESERVED, None),
        (f"ghost@{DOMAIN}", Outcome.RESERVED, None),
    ],
)
def test_resolve(address: str, outcome: Outcome, user: str | None) -> None:
    resolved = resolve(address, MAP, EVERYONE)
    assert (resolved.outcome, resolved.user) == (outcome, user)


def test_default_rule_can_be_turned_off() -> None:
    strict = RecipientMap(DOMAIN, SERVER, RULES, default_rule=False)
    assert resolve(f"dr.martin@{DOMAIN}", strict, EVERYONE).outcome is Outcome.UNMAPPED
    assert resolve(f"postmaster@{DOMAIN}", strict, EVERYONE).outcome is Outcome.USER


def test_mapped_user_must_be_allowed() -> None:
    only_alice = access_rules((f"@alice:{SERVER}",), (), SERVER)
    assert resolve(f"alice@{DOMAIN}", MAP, only_alice).user == f"@alice:{SERVER}"
    assert resolve(f"bob@{DOMAIN}", MAP, only_alice).outcome is Outcome.NOT_ALLOWED
    assert resolve(f"postmaster@{DOMAIN}", MAP, only_alice).outcome is Outcome.NOT_ALLOWED
    admins = access_rules((f"@alice:{SERVER}",), (), SERVER, admins=(f"@admin:{SERVER}",))
    assert resolve(f"postmaster@{DOMAIN}", MAP, admins).outcome is Outcome.USER


def test_a_ghost_of_another_server_is_an_ordinary_user() -> None:
    other = RecipientMap(DOMAIN, SERVER, (RecipientRule("x", "@mss_x:ailleurs.example"),))
    anyone = access_rules(("*",), (), SERVER)
    assert resolve(f"x@{DOMAIN}", other, anyone).user == "@mss_x:ailleurs.example"


# -- distinguished names ------------------------------------------------------------------

LISTED = "CN=mss.operateur.fr,OU=318751275100020,O=GIP Opérateur,ST=Paris (75),C=FR"


def _certificate(attributes: list[x509.NameAttribute]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(attributes)
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def _operator(cn: str = "mss.operateur.fr", o: str = "GIP Opérateur") -> bytes:
    return _certificate(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "Paris (75)"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, o),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "318751275100020"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def test_certificate_matches_the_list_whatever_the_order_and_case() -> None:
    subject, text = certificate_dn(_operator())
    assert text == LISTED
    assert dn_listed(subject, [LISTED])
    reversed_order = "C=FR,ST=Paris (75),O=GIP Opérateur,OU=318751275100020,CN=mss.operateur.fr"
    assert dn_listed(subject, ["CN=autre,C=FR", reversed_order])
    assert dn_listed(subject, [LISTED.upper().replace("GIP ", "GIP  ")])


@pytest.mark.parametrize(
    "der",
    [
        _operator(cn="mss.operateur.fr.evil"),
        _operator(o="GIP Operateur"),  # an accent is not a case
        _certificate([x509.NameAttribute(NameOID.COMMON_NAME, "mss.operateur.fr")]),
    ],
)
def test_other_subjects_do_not_match(der: bytes) -> None:
    subject, _ = certificate_dn(der)
    assert not dn_listed(subject, [LISTED])


def test_an_extra_attribute_does_not_match() -> None:
    subject, _ = certificate_dn(_operator())
    assert not dn_listed(subject, [LISTED + ",L=Paris"])
    assert not dn_listed(subject, [])


def test_unreadable_listed_dn_matches_nothing() -> None:
    assert parse_dn("not a dn") is None
    subject, _ = certificate_dn(_operator())
    assert not dn_listed(subject, ["not a dn", ""])
    assert not dn_listed((), [""])


def test_escaped_comma_in_a_listed_value() -> None:
    der = _certificate(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "CH Nord, site A"),
            x509.NameAttribute(NameOID.COMMON_NAME, "mx.ch-nord.fr"),
        ]
    )
    subject, text = certificate_dn(der)
    assert dn_listed(subject, [text])
    assert dn_listed(subject, ["CN=mx.ch-nord.fr,O=CH Nord\\, site A"])
    assert not dn_listed(subject, ["CN=mx.ch-nord.fr,O=CH Nord,O=site A"])


# -- replies ----------------------------------------------------------------------------

REPLIES = {
    name: value
    for name, value in vars(replies).items()
    if name.startswith("REPLY_") and name != "REPLY_GREETING_IDENT"
}


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_replies_are_ascii_with_a_matching_enhanced_code(name: str) -> None:
    reply = REPLIES[name]
    assert reply.isascii() and "\r" not in reply and "\n" not in reply
    found = re.fullmatch(r"([2-5])\d\d(?: ([2-5])\.\d{1,3}\.\d{1,3})? \S.*", reply)
    assert found, reply
    if found.group(2) is not None:
        assert found.group(1) == found.group(2), "the enhanced code's class is the reply's"


def test_reply_classes_of_the_named_refusals() -> None:
    assert replies.REPLY_STARTTLS_REQUIRED.startswith("530 5.7.0 ")
    assert replies.REPLY_TOO_LARGE.startswith("552 5.3.4 ")
    assert replies.REPLY_UNKNOWN_RECIPIENT.startswith("550 5.1.1 ")
    assert replies.REPLY_TOO_MANY_RECIPIENTS.startswith("452 4.5.3 ")
    assert replies.REPLY_STORE_FAILED.startswith("451 4.3.0 ")
    assert replies.REPLY_TOO_MANY_SESSIONS.startswith("421 ")
    for refusal in (replies.REPLY_SENDER_NOT_WHITELISTED, replies.REPLY_CERT_NOT_LISTED):
        assert refusal.startswith("550 5.7.1 ")
    assert replies.queued("00AB").startswith("250 2.0.0 ") and replies.queued("00AB").endswith(
        "00AB"
    )
    assert replies.code_of(replies.REPLY_TOO_LARGE) == "5.3.4"


# -- DATA -------------------------------------------------------------------------------


def _read(pieces: list[bytes], limit: int = 1000, line: int = 998) -> DataReader:
    reader = DataReader(limit, line)
    for piece in pieces:
        if reader.feed(piece):
            return reader
    raise AssertionError("no end of data")


def test_data_is_unstuffed_and_ends_on_a_lone_dot() -> None:
    reader = _read([b"Subject: x\r\n", b"\r\n", b"..dot\r\n", b".\r\n"])
    assert reader.message() == b"Subject: x\r\n\r\n.dot\r\n"
    assert reader.size == len(reader.message())


@pytest.mark.parametrize(
    "piece",
    [b"a\n.\nb\r\n", b"a\r.\r\r\n", b".\n.\r\n", b"x\ny\r\n", b"\r\r\n", b"trailing\r\r\n"],
)
def test_bare_cr_or_lf_is_refused_and_never_ends_the_data(piece: bytes) -> None:
    reader = DataReader(1000, 998)
    assert reader.feed(b"Subject: x\r\n") is False
    assert reader.feed(piece) is False
    assert reader.verdict is DataVerdict.BARE_LINE_ENDING
    assert reader.feed(b".\r\n") is True
    with pytest.raises(ValueError):
        reader.message()


def test_size_limit_is_exact() -> None:
    body = b"x" * 8 + b"\r\n"  # 10 bytes a line
    assert _read([body] * 10 + [b".\r\n"], limit=100).verdict is DataVerdict.OK
    over = _read([body] * 10 + [b"y\r\n", b".\r\n"], limit=100)
    assert over.verdict is DataVerdict.TOO_LARGE and over.size == 103


def test_transparency_dots_do_not_count() -> None:
    reader = _read([b"..\r\n"] * 10 + [b".\r\n"], limit=30)
    assert reader.verdict is DataVerdict.OK and reader.size == 30


def test_long_line_in_fragments_is_refused_and_resynchronises() -> None:
    reader = DataReader(10_000, 10)
    for piece in (b"0123456789", b"abc\r", b"\n"):  # a CR split from its LF
        assert reader.feed(piece) is False
    assert reader.verdict is DataVerdict.LINE_TOO_LONG
    assert reader.feed(b".\r\n") is True


def test_a_fragment_ending_in_cr_then_lf_is_one_line() -> None:
    reader = _read([b"abc\r", b"\n", b".\r\n"], line=10)
    assert reader.message() == b"abc\r\n"


def test_a_dot_line_after_a_fragment_is_not_the_end() -> None:
    reader = DataReader(10_000, 998)
    assert reader.feed(b"no line end yet") is False
    assert reader.feed(b".\r\n") is False  # it finishes the line "no line end yet."
    assert reader.feed(b".\r\n") is True
    assert reader.message() == b"no line end yet.\r\n"


def test_memory_is_released_past_the_limit() -> None:
    reader = DataReader(100, 998)
    reader.feed(b"x" * 90 + b"\r\n")
    reader.feed(b"x" * 90 + b"\r\n")
    assert reader.verdict is DataVerdict.TOO_LARGE and reader._parts == []
    reader.feed(b"x" * 90 + b"\r\n")
    assert reader._parts == [] and reader.received == 276


def test_empty_message() -> None:
    assert _read([b".\r\n"]).message() == b""


# -- server pieces and config -----------------------------------------------------------


def test_peer_sessions() -> None:
    sessions = PeerSessions(2)
    assert sessions.admit("192.0.2.1") and sessions.admit("192.0.2.1")
    assert not sessions.admit("192.0.2.1")
    assert sessions.admit("192.0.2.2")
    sessions.release("192.0.2.1")
    assert sessions.count("192.0.2.1") == 1 and sessions.admit("192.0.2.1")


def test_call_limits_follow_the_message_limits() -> None:
    limits = ServerLimits(max_recipients=5, max_messages_per_session=3).call_limits()
    assert limits["MAIL"] == limits["DATA"] == 3 and limits["RCPT"] == 15


def test_trace_header_is_one_clean_header() -> None:
    header = trace_header("evil\rInjected: x", "192.0.2.1", "mx.chat", "TLSv1.3", "AES", 0.0)
    assert header.startswith(b"Received: from evilInjected:x (192.0.2.1)\r\n")
    assert header.count(b"\r\n") == 3 and b"\n\t" in header and header.isascii()
    assert header.endswith(b"Thu, 01 Jan 1970 00:00:00 GMT\r\n")


def test_split_listen() -> None:
    assert split_listen("0.0.0.0:25") == ("0.0.0.0", 25)
    assert split_listen("[::]:2525") == ("::", 2525)


def test_gateway_section_validation() -> None:
    assert GatewaySection().enabled is False
    section = GatewaySection(enabled=True, domain="Chat.CHU.mssante.fr.")
    assert section.domain == "chat.chu.mssante.fr"
    for bad in (
        {"enabled": True},
        {"domain": "not a domain"},
        {"listen": ["25"]},
        {"listen": ["host:99999"]},
        {"cert_file": "/x.pem"},
        {"max_recipients": 0},
        {"recipients": [{"local_part": "x", "user": "alice"}]},
        {"unknown_key": 1},
    ):
        with pytest.raises(ValidationError):
            GatewaySection.model_validate(bad)
    rule = GatewaySection.model_validate(
        {"recipients": [{"local_part": "postmaster", "user": "@admin:hospital.example"}]}
    ).recipients[0]
    assert rule.user == "@admin:hospital.example"
