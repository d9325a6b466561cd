"""Ghost-user escaping of MSSanté addresses and address validation."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mssbridge.convert.address import (
    MAX_USER_ID_LENGTH,
    address_from_user_id,
    address_to_localpart,
    ghost_user_id,
    localpart_to_address,
    normalize_address,
    parse_address_list,
)

PREFIX = "mss_"
SERVER = "matrix.hopital-test.fr"
MATRIX_LOCALPART = set(string.ascii_lowercase + string.digits + "._=-/+")


@pytest.mark.parametrize(
    ("address", "localpart"),
    [
        ("dr.house@chu-test.mssante.fr", "mss_dr.house=chu-test.mssante.fr"),
        ("Dr.House@CHU-Test.MSSante.fr", "mss__44r._48ouse=chu-test.mssante.fr"),
        ("jean_dupont@a.fr", "mss_jean_5fdupont=a.fr"),
        ("a=b@a.fr", "mss_a_3db=a.fr"),
        ("a+tag/x-y@a.fr", "mss_a+tag/x-y=a.fr"),
        ("élodie@a.fr", "mss__c3_a9lodie=a.fr"),
        ("x@hôpital.fr", "mss_x=h_c3_b4pital.fr"),
        ('"john doe"@a.fr', "mss__22john_20doe_22=a.fr"),
        ('"john"@a.fr', "mss_john=a.fr"),
        ("o'neil@a.fr", "mss_o_27neil=a.fr"),
    ],
)
def test_address_to_localpart(address: str, localpart: str) -> None:
    assert address_to_localpart(address, PREFIX) == localpart
    assert localpart_to_address(localpart, PREFIX) == normalize_address(address)


@pytest.mark.parametrize(
    ("address", "normalized"),
    [
        ("  Dr.House@CHU-Test.fr ", "Dr.House@chu-test.fr"),
        ('"a\\"b"@x.fr', '"a\\"b"@x.fr'),
        ('"a\\b"@x.fr', "ab@x.fr"),
        ('"a b"@X.FR', '"a b"@x.fr'),
        ('"a@b"@x.fr', '"a@b"@x.fr'),
    ],
)
def test_normalize_address(address: str, normalized: str) -> None:
    assert normalize_address(address) == normalized


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("", "empty"),
        ("no-at-sign", "missing '@'"),
        ("@a.fr", "empty local part"),
        ("a@", "empty domain"),
        ("a@localhost", "two labels"),
        ("a..b@a.fr", "forbidden characters or misplaced dots"),
        (".a@a.fr", "misplaced dots"),
        ("a b@a.fr", "forbidden characters"),
        ("a@a.fr\r\nBcc: x@y.fr", "forbidden characters"),
        ("a@a\r\n.fr", "invalid domain label"),
        ("a@-a.fr", "invalid domain label"),
        ("a@a_b.fr", "invalid domain label"),
        ("a@[127.0.0.1]", "invalid domain label"),
        ('"unterminated@a.fr', "unterminated"),
        ('"a"b@a.fr', "followed by '@'"),
        ('""@a.fr', "empty quoted"),
        ('"a\x01"@a.fr', "control"),
        ("x" * 65 + "@a.fr", "local part longer than 64"),
        ("a@" + "b" * 64 + ".fr", "invalid domain label"),
    ],
)
def test_normalize_address_refuses_garbage(address: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        normalize_address(address)


@pytest.mark.parametrize(
    "localpart",
    [
        "other_dr.house=a.fr",  # not our prefix
        "mss_dr.house",  # no '='
        "mss_a=b=a.fr",  # two '='
        "mss_A=a.fr",  # upper case never appears escaped-free
        "mss__61=a.fr",  # 'a' escaped: not canonical
        "mss__5F=a.fr",  # upper-case hex
        "mss__5=a.fr",  # truncated escape
        "mss__ff=a.fr",  # not UTF-8
        "mss_a=A.fr",  # upper-case domain
        "mss_a=localhost",  # not a valid address once decoded
        "mss_=a.fr",  # empty local part
    ],
)
def test_localpart_to_address_rejects(localpart: str) -> None:
    assert localpart_to_address(localpart, PREFIX) is None


def test_ghost_user_id_round_trip() -> None:
    user_id = ghost_user_id("Dr.House@chu-test.mssante.fr", PREFIX, SERVER)
    assert user_id == "@mss__44r._48ouse=chu-test.mssante.fr:matrix.hopital-test.fr"
    assert address_from_user_id(user_id, PREFIX, SERVER) == "Dr.House@chu-test.mssante.fr"


@pytest.mark.parametrize(
    "user_id",
    [
        "@mss_a=a.fr:other.server",
        "mss_a=a.fr:matrix.hopital-test.fr",
        "@bot:matrix.hopital-test.fr",
        "@mss_a=a.fr:matrix.hopital-test.fr.evil",
    ],
)
def test_address_from_user_id_rejects_foreign_ids(user_id: str) -> None:
    assert address_from_user_id(user_id, PREFIX, SERVER) is None


def test_ghost_user_id_too_long() -> None:
    address = "É" * 32 + "@" + "a" * 60 + ".fr"  # 64-octet local part escaped to 192 chars
    assert len(address_to_localpart(address, PREFIX)) > MAX_USER_ID_LENGTH - len(SERVER)
    with pytest.raises(ValueError, match="255"):
        ghost_user_id(address, PREFIX, SERVER)


def test_parse_address_list() -> None:
    text = 'Dr X <A@B.fr>, c@d.fr; e@f.fr  g@h.fr, "q, r"@s.fr, c@D.fr'
    assert parse_address_list(text) == ("A@b.fr", "c@d.fr", "e@f.fr", "g@h.fr", '"q, r"@s.fr')


def test_parse_address_list_names_the_bad_entry() -> None:
    with pytest.raises(ValueError, match="'pas-une-adresse'"):
        parse_address_list("a@b.fr, pas-une-adresse")


_atext = st.sampled_from(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~") | (
    st.characters(min_codepoint=0xA0, max_codepoint=0x2FFF)
)
_atom = st.text(_atext, min_size=1, max_size=8)
_dot_atom = st.lists(_atom, min_size=1, max_size=3).map(".".join)
_quoted = st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=12).map(
    lambda value: '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
)
_label = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True) | st.text(
    st.sampled_from("abcéèàçôüßœøEÉ"), min_size=1, max_size=6
)
_domain = st.lists(_label, min_size=2, max_size=4).map(".".join)


def _valid_or_none(local: str, domain: str) -> str | None:
    try:
        return normalize_address(f"{local}@{domain}")
    except ValueError:
        return None


@given(local=_dot_atom | _quoted, domain=_domain)
def test_round_trip_for_every_legal_address(local: str, domain: str) -> None:
    address = _valid_or_none(local, domain)
    if address is None:
        return  # e.g. too long: refused, nothing to round-trip
    localpart = address_to_localpart(address, PREFIX)
    assert set(localpart) <= MATRIX_LOCALPART
    assert localpart_to_address(localpart, PREFIX) == address
    assert normalize_address(address) == address


@given(local=_dot_atom, domain=_domain)
def test_ascii_dot_atoms_are_accepted(local: str, domain: str) -> None:
    if local.isascii() and domain.isascii() and len(local) <= 64:
        assert normalize_address(f"{local}@{domain}").startswith(local)


@given(st.text(alphabet=st.sampled_from(sorted(MATRIX_LOCALPART)), max_size=30))
def test_any_localpart_decodes_to_a_canonical_ghost_or_none(suffix: str) -> None:
    address = localpart_to_address(PREFIX + suffix, PREFIX)
    if address is not None:
        assert address_to_localpart(address, PREFIX) == PREFIX + suffix
