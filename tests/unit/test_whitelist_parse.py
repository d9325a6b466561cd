"""The signed MSSanté whitelist: the real file verifies; tampered, unsafe or odd files do not."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from mssbridge.directory.whitelist import (
    NOT_ANCHORED,
    SignerValidityError,
    WhitelistError,
    parse_whitelist,
    read_whitelist,
)
from mssbridge.lab.pki import generate_test_pki
from mssbridge.lab.whitelist import ListedDomain, sign_whitelist, write_lab_whitelist

REAL_LIST = Path(__file__).resolve().parents[3] / "shared/data/listeblanchemssante-2025-02-28.xml"
GENERATED = dt.datetime(2025, 2, 28, 15, 42, 7, tzinfo=dt.UTC)
TODAY = dt.datetime(2026, 11, 22, tzinfo=dt.UTC)  # after the signer's expiry (2026-08-23)
UTC = dt.UTC


@pytest.fixture(scope="module")
def real_bytes() -> bytes:
    if not REAL_LIST.exists():
        pytest.fail(f"the real whitelist is expected at {REAL_LIST}", pytrace=False)
    return REAL_LIST.read_bytes()


def _signer(
    not_before: dt.datetime, not_after: dt.datetime
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A self-issued RSA signer certificate valid over the given period."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.COMMON_NAME, "alb.test.mssante.fr"),
        ]
    )
    usage = x509.KeyUsage(True, True, False, False, False, False, False, False, False)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


ENTRIES = [
    ListedDomain("chu-a.mssante.fr", "CN=mss.op-a.fr,O=OP A,C=FR", "CHU A"),
    ListedDomain("chu-a.mssante.fr", "CN=mss2.op-a.fr,O=OP A,C=FR", "CHU A"),
    ListedDomain("Cabinet-B.mssante.fr", "CN=mss.op-b.fr,O=OP B,C=FR", "Cabinet B"),
]


def _signed(generated: dt.datetime, valid: tuple[dt.datetime, dt.datetime]) -> bytes:
    key, cert = _signer(*valid)
    return sign_whitelist(ENTRIES, generated, key, [cert])


def test_real_list_verifies_at_its_generation_date(real_bytes: bytes) -> None:
    whitelist = parse_whitelist(real_bytes, now=TODAY)
    assert whitelist.generated_at == GENERATED
    assert whitelist.source_entries == 6494
    assert len(whitelist.domains) == 4944
    assert len(whitelist.operator_dns) == 391
    # 21 (domain, DN) pairs appear twice (different descriptions): one entry each
    assert len(whitelist.entries) == 6473
    assert "15-20.mssante.fr" in whitelist.domains
    assert whitelist.signer.subject.startswith("CN=alb.mssante.fr,")
    assert "AC IGC-SANTE ELEMENTAIRE ORGANISATIONS" in whitelist.signer.issuer
    assert whitelist.signer.not_after == dt.datetime(2026, 8, 23, 13, 54, 23, tzinfo=UTC)
    assert not whitelist.anchored and whitelist.trust == NOT_ANCHORED
    # expired now, valid when generated: accepted, with a warning
    assert len(whitelist.warnings) == 1 and "expired on 2026-08-23" in whitelist.warnings[0]
    sesan = {e.operator_dn for e in whitelist.entries if e.domain == "15-20.mssante.fr"}
    assert "CN=smtp-1.sesan.santnet.com,OU=1750048886,O=GIP SESAN,ST=Paris (75),C=FR" in sesan


def test_real_list_read_before_expiry_has_no_warning(real_bytes: bytes) -> None:
    whitelist = parse_whitelist(real_bytes, now=dt.datetime(2025, 3, 1, tzinfo=UTC))
    assert whitelist.warnings == ()
    assert len(whitelist.sha256) == 64


def test_one_byte_in_a_domain_name_is_a_digest_mismatch(real_bytes: bytes) -> None:
    tampered = real_bytes.replace(b"<Nom>15-20.mssante.fr<", b"<Nom>15-21.mssante.fr<", 1)
    assert tampered != real_bytes and len(tampered) == len(real_bytes)
    with pytest.raises(WhitelistError, match="digest mismatch"):
        parse_whitelist(tampered, now=TODAY)


def test_a_moved_generation_date_is_caught_as_tampering_not_as_a_date(real_bytes: bytes) -> None:
    tampered = real_bytes.replace(b"2025-02-28T15:42:07Z</Date", b"2030-02-28T15:42:07Z</Date", 1)
    with pytest.raises(WhitelistError, match="digest mismatch"):
        parse_whitelist(tampered, now=TODAY, accept_expired_signer=True)


def test_a_changed_signature_value_is_refused(real_bytes: bytes) -> None:
    start = real_bytes.index(b"<SignatureValue>") + len(b"<SignatureValue>")
    flipped = b"A" if real_bytes[start : start + 1] != b"A" else b"B"
    tampered = real_bytes[:start] + flipped + real_bytes[start + 1 :]
    with pytest.raises(WhitelistError, match="invalid signature"):
        parse_whitelist(tampered, now=TODAY)


def test_generation_outside_the_signer_validity_needs_the_admin(tmp_path: Path) -> None:
    valid = (dt.datetime(2020, 1, 1, tzinfo=UTC), dt.datetime(2021, 1, 1, tzinfo=UTC))
    data = _signed(dt.datetime(2023, 6, 1, tzinfo=UTC), valid)
    with pytest.raises(SignerValidityError, match="--accept-expired-signer"):
        parse_whitelist(data, now=TODAY)
    accepted = parse_whitelist(data, now=TODAY, accept_expired_signer=True)
    assert "accepted by the administrator" in accepted.warnings[0]
    assert accepted.domains == {"chu-a.mssante.fr", "cabinet-b.mssante.fr"}


def test_signed_in_validity_and_still_valid_has_no_warning() -> None:
    valid = (dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2030, 1, 1, tzinfo=UTC))
    whitelist = parse_whitelist(_signed(dt.datetime(2025, 1, 1, tzinfo=UTC), valid), now=TODAY)
    assert whitelist.warnings == ()
    assert len(whitelist.entries) == 3
    assert {e.domain for e in whitelist.entries} == {"chu-a.mssante.fr", "cabinet-b.mssante.fr"}


def test_repeated_domain_and_dn_keeps_the_latest_update() -> None:
    dn = "CN=mss.op-a.fr,O=OP A,C=FR"
    entries = [
        ListedDomain("chu-a.mssante.fr", dn, "ancien", dt.datetime(2024, 1, 1, tzinfo=UTC)),
        ListedDomain("chu-a.mssante.fr", dn, "récent", dt.datetime(2024, 6, 1, tzinfo=UTC)),
        ListedDomain("chu-a.mssante.fr", dn, "plus ancien", dt.datetime(2023, 1, 1, tzinfo=UTC)),
    ]
    key, cert = _signer(dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2030, 1, 1, tzinfo=UTC))
    data = sign_whitelist(entries, dt.datetime(2025, 1, 1, tzinfo=UTC), key, [cert])
    whitelist = parse_whitelist(data, now=TODAY)
    assert whitelist.source_entries == 3
    assert [e.description for e in whitelist.entries] == ["récent"]


def test_lab_list_chains_to_its_anchor_and_not_to_another(tmp_path: Path) -> None:
    pki = generate_test_pki(tmp_path / "pki")
    path = write_lab_whitelist(tmp_path / "wl.xml", pki, ["chu-test.mssante.fr"])
    anchored = read_whitelist(path, ca_file=pki.ca_bundle)
    assert anchored.anchored and str(pki.ca_bundle) in anchored.trust
    assert anchored.entries[0].operator_dn.startswith("CN=localhost,")
    with pytest.raises(WhitelistError, match="does not chain to the anchors"):
        read_whitelist(path, ca_file=pki.rogue_ca_cert)


XXE = b"""<?xml version="1.0"?>
<!DOCTYPE ListeBlancheMSSante [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
<DateDeGeneration>2025-02-28T15:42:07Z</DateDeGeneration>
<ListeDomaines><Domaine><Nom>&xxe;</Nom></Domaine></ListeDomaines></ListeBlancheMSSante>"""

LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">
<DateDeGeneration>&lol3;</DateDeGeneration></ListeBlancheMSSante>"""


@pytest.mark.parametrize("document", [XXE, LAUGHS], ids=["external-entity", "entity-expansion"])
def test_documents_with_entities_are_refused(document: bytes) -> None:
    with pytest.raises(WhitelistError, match="DOCTYPE") as caught:
        parse_whitelist(document)
    assert "root:" not in str(caught.value)  # nothing of /etc/passwd was read


def test_malformed_xml_is_a_clear_error() -> None:
    with pytest.raises(WhitelistError, match="not well-formed XML"):
        parse_whitelist(b"<ListeBlancheMSSante><DateDeGeneration>")


def test_other_documents_are_refused() -> None:
    with pytest.raises(WhitelistError, match="expected ListeBlancheMSSante"):
        parse_whitelist(b"<html/>")
    unsigned = (
        b'<ListeBlancheMSSante xmlns="https://listeblanche.mssante.fr/schema">'
        b"<DateDeGeneration>2025-02-28T15:42:07Z</DateDeGeneration></ListeBlancheMSSante>"
    )
    with pytest.raises(WhitelistError, match="expected one enveloped signature"):
        parse_whitelist(unsigned)


def test_a_signed_entry_that_is_not_a_domain_is_refused() -> None:
    key, cert = _signer(dt.datetime(2024, 1, 1, tzinfo=UTC), dt.datetime(2030, 1, 1, tzinfo=UTC))
    bad = [ListedDomain("pas un domaine", "CN=x,C=FR")]
    data = sign_whitelist(bad, dt.datetime(2025, 1, 1, tzinfo=UTC), key, [cert])
    with pytest.raises(WhitelistError, match="is not a domain name"):
        parse_whitelist(data, now=TODAY)
