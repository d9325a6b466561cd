"""DKIM: sign then verify, tampering, unsigned mail, unknown keys, DNS errors, key generation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mssbridge.config import DkimSection
from mssbridge.errors import ConfigError
from mssbridge.mail.dkim import (
    DkimSigner,
    DkimStatus,
    DkimVerifier,
    from_settings,
    generate_key,
    load_private_key,
)

DOMAIN = "chu-test.mssante.fr"
MAIL = (
    b"From: Dr House <dr.house@chu-test.mssante.fr>\r\n"
    b"To: bal@hopital.mssante.fr\r\n"
    b"Subject: Avis\r\n"
    b"Message-ID: <1@chu-test.mssante.fr>\r\n"
    b"Date: Mon, 05 Jan 2026 10:00:00 +0100\r\n"
    b"\r\n"
    b"Bonjour, voici mon avis.\r\n"
)


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return generate_key("s1", DOMAIN, tmp_path_factory.mktemp("dkim"))


@pytest.fixture
def signer(keypair: tuple[Path, str]) -> DkimSigner:
    return DkimSigner("s1", DOMAIN, load_private_key(keypair[0]))


@pytest.fixture
def verifier(keypair: tuple[Path, str]) -> DkimVerifier:
    return DkimVerifier.from_keys({f"{DOMAIN}/s1": keypair[1]})


def test_sign_then_verify_round_trip(signer: DkimSigner, verifier: DkimVerifier) -> None:
    signed = signer.sign(MAIL)
    assert signed.startswith(b"DKIM-Signature:") and signed.endswith(MAIL)
    result = verifier.verify(signed)
    assert result.status == DkimStatus.PASS and not result.failed
    assert result.header == f"dkim=pass header.d={DOMAIN} header.s=s1"


async def test_large_mail_is_signed_off_the_event_loop(
    signer: DkimSigner, verifier: DkimVerifier
) -> None:
    big = MAIL + b"x" * 76 * 2 + b"\r\n" + (b"A" * 76 + b"\r\n") * 8000
    signed = await signer.sign_async(big)
    assert (await verifier.verify_async(signed)).status == DkimStatus.PASS


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ((b"voici mon avis", b"voici mon AVIS"), DkimStatus.FAIL),  # body
        ((b"Subject: Avis", b"Subject: Autre"), DkimStatus.FAIL),  # a signed header
    ],
)
def test_tampered_mail_fails(
    signer: DkimSigner, verifier: DkimVerifier, change: tuple[bytes, bytes], status: DkimStatus
) -> None:
    tampered = signer.sign(MAIL).replace(*change)
    result = verifier.verify(tampered)
    assert result.status == status and result.failed
    assert b"AVIS" not in result.header.encode() and "Autre" not in result.header


def test_unsigned_mail_and_unknown_key(signer: DkimSigner) -> None:
    assert DkimVerifier().verify(MAIL).header == "dkim=none"
    result = DkimVerifier().verify(signer.sign(MAIL))
    assert (result.status, result.reason, result.failed) == (DkimStatus.PERMERROR, "no key", True)


def test_dns_fallback_is_injectable(keypair: tuple[Path, str], signer: DkimSigner) -> None:
    asked: list[bytes] = []

    def dns(name: bytes, timeout: float = 5) -> bytes:
        asked.append(name)
        return keypair[1].encode()

    assert DkimVerifier.from_keys({}, dns).verify(signer.sign(MAIL)).status == DkimStatus.PASS
    assert asked == [f"s1._domainkey.{DOMAIN}.".encode()]

    def down(name: bytes, timeout: float = 5) -> bytes:
        raise TimeoutError

    result = DkimVerifier.from_keys({}, down).verify(signer.sign(MAIL))
    assert result.status == DkimStatus.TEMPERROR and not result.failed


def test_trusted_keys_accept_a_bare_key_and_refuse_bad_names(
    keypair: tuple[Path, str], signer: DkimSigner
) -> None:
    bare = keypair[1].split("p=", 1)[1]
    verifier = DkimVerifier.from_keys({f"{DOMAIN.upper()}/s1": bare})
    assert verifier.verify(signer.sign(MAIL)).status == DkimStatus.PASS
    with pytest.raises(ConfigError, match="domain/selector"):
        DkimVerifier.from_keys({"s1._domainkey.x": bare})


def test_keygen_and_settings(keypair: tuple[Path, str], tmp_path: Path) -> None:
    path, record = keypair
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert record.startswith("v=DKIM1; k=rsa; p=")
    zone = (path.parent / "s1.txt").read_text()
    assert zone.startswith(f"s1._domainkey.{DOMAIN}. IN TXT (")
    assert all(len(part) <= 257 for part in zone.split(" ") if part.startswith('"'))
    dkim = from_settings(DkimSection(key_file=path, selector="s1"), f"bal@{DOMAIN}")
    assert dkim.signer is not None and dkim.signer.domain == DOMAIN and not dkim.reject_failures
    assert from_settings(DkimSection(key_file=""), "bal@x.fr").signer is None
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    bad.chmod(0o600)
    with pytest.raises(ConfigError, match="PEM"):
        from_settings(DkimSection(key_file=bad), "bal@x.fr")
    bad.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(bad)
