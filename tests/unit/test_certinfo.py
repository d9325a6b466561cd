"""Certificate and CRL inspection, CRL loading modes, refusal reasons and SIGHUP-style reloads."""

from __future__ import annotations

import contextlib
import datetime as dt
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mssbridge.checks import certificate_verdict
from mssbridge.config import TlsSection
from mssbridge.errors import ConfigError
from mssbridge.lab.pki import CertFiles, TestPki, generate_test_pki
from mssbridge.security import certinfo
from mssbridge.security.tls import (
    TlsContexts,
    client_context,
    describe_refusal,
    refusal_reason,
    server_context,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def old_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A PKI made 40 days ago: certificates still valid, CRLs expired 10 days ago."""
    return generate_test_pki(tmp_path_factory.mktemp("old-pki"), now=NOW - dt.timedelta(days=40))


@pytest.fixture(scope="module")
def ageing_pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    """A PKI made 340 days ago: its certificates expire in 25 days."""
    return generate_test_pki(tmp_path_factory.mktemp("ageing"), now=NOW - dt.timedelta(days=340))


def _client(pki: TestPki) -> CertFiles:
    return pki.client(next(iter(pki.clients)))


def _tls(pki: TestPki, files: CertFiles | None = None, crls: tuple[Path, ...] = ()) -> TlsSection:
    files = files or _client(pki)
    return TlsSection(
        ca_file=pki.ca_bundle, cert_file=files.chain, key_file=files.key, crl_files=crls
    )


def _der_copy(pem: Path, target: Path) -> Path:
    crl = x509.load_pem_x509_crl(pem.read_bytes())
    target.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    return target


# -- inspection --------------------------------------------------------------------------


def test_valid_certificate_chain_and_crls(test_pki: TestPki) -> None:
    report = certinfo.inspect(_tls(test_pki, crls=(test_pki.root_crl, test_pki.intermediate_crl)))
    assert report.ok and not report.warnings, report
    assert report.certificate.state() == "valid"
    assert report.certificate.days_left() in (363, 364)
    assert report.chain.ok and len(report.chain.path) == 3
    assert [c.signature for c in report.crls] == ["valid", "valid"]
    assert report.crls[1].revoked == 2 and not report.crls[1].expired()
    assert report.crl_mode == "chain"


def test_days_left_for_metrics(test_pki: TestPki) -> None:
    days = certinfo.certificate_days_left(_client(test_pki).chain)
    assert days == certinfo.certificate_days_left(_client(test_pki).cert) and 360 < days <= 365


def test_expired_certificate_is_an_error(test_pki: TestPki) -> None:
    report = certinfo.inspect(_tls(test_pki, test_pki.expired_client))
    assert not report.ok and "expired" in report.errors[0]
    assert report.chain.ok, "an expired certificate still chains: the reasons stay apart"
    with pytest.raises(ValueError, match="expired"):
        certificate_verdict(_tls(test_pki, test_pki.expired_client), NOW)


def test_rogue_certificate_has_a_broken_chain(test_pki: TestPki) -> None:
    report = certinfo.inspect(_tls(test_pki, test_pki.rogue_client))
    assert not report.chain.ok and not report.ok
    assert "HORS IGC-SANTE" in report.chain.detail and "unknown CA" in report.chain.detail
    verdict = certificate_verdict(_tls(test_pki, test_pki.rogue_client), NOW)
    assert verdict.startswith("WARNING") and "chain BROKEN" in verdict


def test_certificate_expiring_soon_warns(ageing_pki: TestPki) -> None:
    report = certinfo.inspect(_tls(ageing_pki))
    assert report.ok and "expires in 2" in report.warnings[0]
    assert certificate_verdict(_tls(ageing_pki), NOW).startswith("WARNING")


def test_expired_crl_is_an_error(old_pki: TestPki) -> None:
    report = certinfo.inspect(_tls(old_pki, crls=(old_pki.intermediate_crl,)))
    assert report.chain.ok and not report.ok
    assert "fetch-crl" in report.errors[0]
    with pytest.raises(ConfigError, match=r"tls\.crl_files.*expired"):
        client_context(_tls(old_pki, crls=(old_pki.intermediate_crl,)))


def test_crl_of_another_pki_has_an_invalid_signature(test_pki: TestPki, old_pki: TestPki) -> None:
    crl = x509.load_pem_x509_crl(old_pki.intermediate_crl.read_bytes())
    anchors = certinfo.load_certificates(test_pki.intermediate_cert)
    assert certinfo.crl_info(crl, "x", anchors).signature == "invalid"


def test_signature_walk_alone(test_pki: TestPki) -> None:
    """The fallback used when cryptography has no path validation API."""
    anchors = certinfo.load_certificates(test_pki.ca_bundle)
    good = certinfo.load_certificates(_client(test_pki).chain)
    rogue = certinfo.load_certificates(test_pki.rogue_client.chain)
    assert certinfo._walk(good[0], good[1:], anchors).ok
    assert not certinfo._walk(rogue[0], rogue[1:], anchors).ok
    assert not certinfo._walk(good[0], [], anchors).ok, "the intermediate is needed"


def test_der_files_are_read(test_pki: TestPki, tmp_path: Path) -> None:
    der = _der_copy(test_pki.intermediate_crl, tmp_path / "inter.crl")
    assert len(certinfo.load_crls(der)) == 1
    cert = x509.load_pem_x509_certificate(test_pki.root_cert.read_bytes())
    (tmp_path / "root.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
    assert certinfo.load_certificates(tmp_path / "root.der") == [cert]


def test_unreadable_crl_names_the_file(test_pki: TestPki, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.crl"
    bogus.write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=str(bogus)):
        client_context(_tls(test_pki, crls=(bogus,)))


# -- CRLs in TLS contexts ----------------------------------------------------------------


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        for side in (c, s):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())


def _server(pki: TestPki, files: CertFiles) -> ssl.SSLContext:
    return server_context(_tls(pki, files), require_client_cert=False)


def test_leaf_mode_with_the_issuing_ca_crl_only(test_pki: TestPki, tmp_path: Path) -> None:
    der = _der_copy(test_pki.intermediate_crl, tmp_path / "inter.crl")
    context = client_context(_tls(test_pki, crls=(der,)))
    assert context.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    assert not context.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN & ~ssl.VERIFY_CRL_CHECK_LEAF
    _handshake(context, _server(test_pki, test_pki.server))
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        _handshake(context, _server(test_pki, test_pki.revoked_server))
    assert "certificate revoked" in describe_refusal(refused.value, "SMTP x:587")


def test_chain_mode_needs_every_ca_crl(test_pki: TestPki) -> None:
    both = client_context(_tls(test_pki, crls=(test_pki.root_crl, test_pki.intermediate_crl)))
    assert both.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN == ssl.VERIFY_CRL_CHECK_CHAIN
    _handshake(both, _server(test_pki, test_pki.server))
    root_only = client_context(_tls(test_pki, crls=(test_pki.root_crl,)))
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        _handshake(root_only, _server(test_pki, test_pki.server))
    assert "no CRL of its issuer" in refusal_reason(refused.value)


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("expired_server", "certificate has expired"),
        ("not_yet_valid_server", "certificate not yet valid"),
        ("rogue_server", "unknown CA"),
        ("other_host_server", "hostname mismatch"),
    ],
)
def test_refusal_reasons(test_pki: TestPki, which: str, reason: str) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        _handshake(client_context(_tls(test_pki)), _server(test_pki, getattr(test_pki, which)))
    assert reason in describe_refusal(refused.value, "IMAP x:993")


def test_alert_reasons() -> None:
    alert = ssl.SSLError(1, "alert")
    alert.reason = "SSLV3_ALERT_CERTIFICATE_REVOKED"
    message = describe_refusal(alert, "IMAP x:993")
    assert "client certificate" in message and "our certificate is revoked" in message
    alert.reason = "TLSV1_ALERT_UNKNOWN_CA"
    assert "unknown CA" in refusal_reason(alert)


# -- reloads -----------------------------------------------------------------------------


def test_reload_keeps_the_context_when_files_break(test_pki: TestPki, tmp_path: Path) -> None:
    crl = tmp_path / "inter.crl.pem"
    crl.write_bytes(test_pki.intermediate_crl.read_bytes())
    contexts = TlsContexts(_tls(test_pki, crls=(crl,)))
    first = contexts.client
    assert contexts.reload() and contexts.client is not first and contexts.generation == 1
    crl.write_bytes(b"truncated")
    assert not contexts.reload() and contexts.generation == 1


def test_contexts_refuse_to_start_with_an_expired_certificate(test_pki: TestPki) -> None:
    with pytest.raises(ConfigError, match="expired"):
        TlsContexts(_tls(test_pki, test_pki.expired_client))
