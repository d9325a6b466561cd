"""TLS contexts: protocol floor, cipher list, trust anchors, errors, in-memory handshakes."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from mssbridge.config import TlsSection
from mssbridge.errors import ConfigError
from mssbridge.lab.pki import ROOT_NAME, CertFiles, TestPki
from mssbridge.security.tls import (
    TlsRefused,
    client_context,
    describe_refusal,
    is_certificate_refusal,
    server_context,
)


def _section(pki: TestPki, files: CertFiles, **overrides: object) -> TlsSection:
    values: dict[str, object] = {
        "ca_file": pki.ca_bundle,
        "cert_file": files.chain,
        "key_file": files.key,
    }
    values.update(overrides)
    return TlsSection.model_validate(values)


def _client_files(pki: TestPki) -> CertFiles:
    return pki.client(next(iter(pki.clients)))


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext) -> None:
    """Run a TLS handshake (and one record each way) over memory BIOs; raise on failure."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_side=False, server_hostname="localhost")
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(20):
        for name, side in (("client", c), ("server", s)):
            if not done[name]:
                try:
                    side.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    # TLS 1.3: the server judges the client certificate after the client has finished,
    # and the client only learns of a refusal when it reads.
    s.write(b"ping")
    c_in.write(s_out.read())
    c.write(b"pong")
    s_in.write(c_out.read())
    assert s.read(4) == b"pong"
    c_in.write(s_out.read())
    assert c.read(4) == b"ping"


def test_client_context_floor_and_verification(test_pki: TestPki) -> None:
    context = client_context(_section(test_pki, _client_files(test_pki)))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.options & ssl.OP_NO_COMPRESSION


def test_check_hostname_follows_config(test_pki: TestPki) -> None:
    section = _section(test_pki, _client_files(test_pki), check_hostname=False)
    assert client_context(section).check_hostname is False


def test_tls12_ciphers_are_forward_secret_aead_only(test_pki: TestPki) -> None:
    ciphers = client_context(_section(test_pki, _client_files(test_pki))).get_ciphers()
    tls12 = [c for c in ciphers if c["protocol"] == "TLSv1.2"]
    assert tls12, "no TLS 1.2 cipher left"
    for cipher in tls12:
        assert cipher["kea"] == "kx-ecdhe", cipher["name"]
        assert cipher["aead"], cipher["name"]


def test_only_configured_anchors_are_trusted(test_pki: TestPki) -> None:
    context = client_context(_section(test_pki, _client_files(test_pki)))
    anchors = context.get_ca_certs()
    assert len(anchors) == 1
    subject = anchors[0]["subject"]
    assert (("commonName", ROOT_NAME),) in subject


@pytest.mark.parametrize("key", ["ca_file", "cert_file", "key_file"])
def test_missing_file_names_key_and_path(test_pki: TestPki, tmp_path: Path, key: str) -> None:
    missing = tmp_path / "absent.pem"
    section = _section(test_pki, _client_files(test_pki), **{key: missing})
    with pytest.raises(ConfigError) as raised:
        client_context(section)
    assert f"tls.{key}" in str(raised.value)
    assert str(missing) in str(raised.value)


def test_key_not_matching_certificate_is_a_config_error(test_pki: TestPki) -> None:
    section = _section(test_pki, _client_files(test_pki), key_file=test_pki.server.key)
    with pytest.raises(ConfigError) as raised:
        client_context(section)
    assert str(test_pki.server.key) in str(raised.value)


def test_ca_file_without_certificate_is_a_config_error(test_pki: TestPki, tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"tls\.ca_file"):
        client_context(_section(test_pki, _client_files(test_pki), ca_file=bogus))


def test_handshake_with_organisation_certificate(test_pki: TestPki) -> None:
    client = client_context(_section(test_pki, _client_files(test_pki)))
    server = server_context(_section(test_pki, test_pki.server))
    _handshake(client, server)


@pytest.mark.parametrize("which", ["rogue_client", "expired_client"])
def test_server_refuses_untrusted_client(test_pki: TestPki, which: str) -> None:
    client = client_context(_section(test_pki, getattr(test_pki, which)))
    server = server_context(_section(test_pki, test_pki.server))
    with pytest.raises(ssl.SSLError) as raised:
        _handshake(client, server)
    assert is_certificate_refusal(raised.value)


def test_server_with_crl_refuses_revoked_client(test_pki: TestPki) -> None:
    client = client_context(_section(test_pki, test_pki.revoked_client))
    server = server_context(
        _section(test_pki, test_pki.server), crl_file=test_pki.ca_bundle_with_crls
    )
    assert server.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
    with pytest.raises(ssl.SSLError) as raised:
        _handshake(client, server)
    assert is_certificate_refusal(raised.value)


def test_client_refuses_server_outside_anchors(test_pki: TestPki) -> None:
    section = _section(test_pki, _client_files(test_pki), ca_file=test_pki.rogue_ca_cert)
    server = server_context(_section(test_pki, test_pki.server))
    with pytest.raises(ssl.SSLCertVerificationError) as raised:
        _handshake(client_context(section), server)
    assert is_certificate_refusal(raised.value)
    message = describe_refusal(raised.value, "IMAP host:993")
    assert "not trusted" in message and "tls.ca_file" in message


def test_tls_refused_is_a_config_error() -> None:
    assert issubclass(TlsRefused, ConfigError)
    assert not is_certificate_refusal(ConnectionResetError())
