"""A throw-away test PKI shaped like IGC-Santé: roots, an ORGANISATIONS CA, leaves and CRLs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT_NAME = "TEST AC RACINE IGC-SANTE ELEMENTAIRE"
INTERMEDIATE_NAME = "TEST AC IGC-SANTE ELEMENTAIRE ORGANISATIONS"
ROGUE_ROOT_NAME = "TEST AC RACINE HORS IGC-SANTE"
PKI_ORGANISATION = "TEST IGC-SANTE"
DEFAULT_CLIENT_NAMES = ("messagerie@chu-test.mssante.fr", "CHU TEST")
EXPIRED_CLIENT_NAME = "expire@chu-test.mssante.fr"
REVOKED_CLIENT_NAME = "revoque@chu-test.mssante.fr"
ROGUE_CLIENT_NAME = DEFAULT_CLIENT_NAMES[0]
# The one name in the SAN of the server certificate issued for another host.
OTHER_SERVER_NAME = "smtp.autre-operateur.mssante.fr"
ORGANISATION = "CHU TEST"
# IGC-Santé organisation certificates carry the national structure id in OU, prefixed
# by its kind (1 = FINESS, 3 = SIRET).
STRUCTURE_ID = "1750000001"

_ONE_DAY = dt.timedelta(days=1)
_VALIDITY = dt.timedelta(days=365)
_CRL_VALIDITY = dt.timedelta(days=30)

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class CertFiles:
    """The PEM files of one end-entity certificate."""

    cert: Path
    key: Path
    chain: Path  # the leaf then its issuing CA(s), as presented during a handshake


@dataclass(frozen=True)
class TestPki:
    """Paths of everything :func:`generate_test_pki` wrote."""

    __test__ = False  # not a pytest test class despite the name

    directory: Path
    ca_bundle: Path  # trust anchors: the test root only
    root_cert: Path
    intermediate_cert: Path
    root_crl: Path  # empty but valid
    intermediate_crl: Path  # lists the revoked client
    ca_bundle_with_crls: Path  # anchors + intermediate + both CRLs, for servers that check CRLs
    server: CertFiles
    clients: Mapping[str, CertFiles]
    expired_client: CertFiles
    revoked_client: CertFiles
    rogue_ca_cert: Path
    rogue_client: CertFiles
    # Server certificates a client must refuse, all for ``server_names`` but the last.
    expired_server: CertFiles
    not_yet_valid_server: CertFiles
    revoked_server: CertFiles  # listed in intermediate_crl
    rogue_server: CertFiles  # issued by the rogue root
    other_host_server: CertFiles  # valid, for OTHER_SERVER_NAME only

    def client(self, name: str) -> CertFiles:
        """The files of the client certificate whose CN is ``name``."""
        return self.clients[name]


@dataclass(frozen=True)
class _Issued:
    cert: x509.Certificate
    key: Key


def _name(common_name: str, *, organisation: str, unit: str | None = None) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
    ]
    if unit:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def _builder(
    subject: x509.Name,
    key: Key,
    issuer: _Issued | None,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.CertificateBuilder:
    issuer_name = issuer.cert.subject if issuer else subject
    issuer_public = issuer.key.public_key() if issuer else key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_public), False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=True,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _make_ca(
    common_name: str, issuer: _Issued | None, now: dt.datetime, path_length: int | None
) -> _Issued:
    key = _new_key()
    signer = issuer.key if issuer else key
    cert = (
        _builder(
            _name(common_name, organisation=PKI_ORGANISATION),
            key,
            issuer,
            now - _ONE_DAY,
            now + 3 * _VALIDITY,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), True)
        .add_extension(_ca_usage(), True)
        .sign(signer, hashes.SHA256())
    )
    return _Issued(cert, key)


def _make_leaf(
    subject: x509.Name,
    issuer: _Issued,
    validity: tuple[dt.datetime, dt.datetime],
    *,
    server_names: Sequence[str] = (),
) -> _Issued:
    """An end-entity certificate; with ``server_names`` also a TLS server certificate."""
    key = _new_key()
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server_names else []
    usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (
        _builder(subject, key, issuer, *validity)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(_leaf_usage(), True)
        .add_extension(x509.ExtendedKeyUsage(usages), False)
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), False
        )
    return _Issued(builder.sign(issuer.key, hashes.SHA256()), key)


def _general_name(value: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _make_crl(
    issuer: _Issued, revoked: Sequence[x509.Certificate], now: dt.datetime
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.cert.subject)
        .last_update(now - _ONE_DAY)
        .next_update(now + _CRL_VALIDITY)
        .add_extension(x509.CRLNumber(1), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    )
    for cert in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(cert.serial_number)
            .revocation_date(now - _ONE_DAY)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer.key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int = 0o644) -> Path:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def _write_leaf(directory: Path, stem: str, leaf: _Issued, chain: Sequence[_Issued]) -> CertFiles:
    key_pem = leaf.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return CertFiles(
        cert=_write(directory / f"{stem}.pem", _pem(leaf.cert)),
        key=_write(directory / f"{stem}.key", key_pem, 0o600),
        chain=_write(
            directory / f"{stem}-chain.pem",
            _pem(leaf.cert) + b"".join(_pem(ca.cert) for ca in chain),
        ),
    )


def _file_stem(name: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in name.lower())
    return f"client-{safe}"


def _org_subject(common_name: str) -> x509.Name:
    return _name(common_name, organisation=ORGANISATION, unit=STRUCTURE_ID)


def generate_test_pki(
    directory: Path,
    *,
    server_names: Sequence[str] = ("localhost", "127.0.0.1"),
    client_names: Sequence[str] = DEFAULT_CLIENT_NAMES,
    now: dt.datetime | None = None,
) -> TestPki:
    """Write a fresh test PKI into ``directory`` (overwriting) and return the paths.

    Client certificates get CN = each of ``client_names`` (a mailbox address lets a
    client log in with SASL EXTERNAL), O/OU like an IGC-Santé organisation certificate.
    """
    now = now or dt.datetime.now(dt.UTC)
    directory.mkdir(parents=True, exist_ok=True)
    root = _make_ca(ROOT_NAME, None, now, path_length=1)
    intermediate = _make_ca(INTERMEDIATE_NAME, root, now, path_length=0)
    rogue_root = _make_ca(ROGUE_ROOT_NAME, None, now, path_length=0)
    valid = (now - _ONE_DAY, now + _VALIDITY)

    server = _make_leaf(
        _org_subject(server_names[0]), intermediate, valid, server_names=server_names
    )
    clients = {name: _make_leaf(_org_subject(name), intermediate, valid) for name in client_names}
    expired = _make_leaf(
        _org_subject(EXPIRED_CLIENT_NAME), intermediate, (now - 30 * _ONE_DAY, now - _ONE_DAY)
    )
    revoked = _make_leaf(_org_subject(REVOKED_CLIENT_NAME), intermediate, valid)
    rogue = _make_leaf(_org_subject(ROGUE_CLIENT_NAME), rogue_root, valid)

    def bad_server(issuer: _Issued, validity: tuple[dt.datetime, dt.datetime]) -> _Issued:
        subject = _org_subject(server_names[0])
        return _make_leaf(subject, issuer, validity, server_names=server_names)

    expired_server = bad_server(intermediate, (now - 30 * _ONE_DAY, now - _ONE_DAY))
    future_server = bad_server(intermediate, (now + _ONE_DAY, now + _VALIDITY))
    revoked_server = bad_server(intermediate, valid)
    rogue_server = bad_server(rogue_root, valid)
    other_host = _make_leaf(
        _org_subject(OTHER_SERVER_NAME), intermediate, valid, server_names=[OTHER_SERVER_NAME]
    )
    root_crl = _make_crl(root, [], now).public_bytes(serialization.Encoding.PEM)
    intermediate_crl = _make_crl(intermediate, [revoked.cert, revoked_server.cert], now)
    intermediate_crl_pem = intermediate_crl.public_bytes(serialization.Encoding.PEM)

    def leaf(stem: str, issued: _Issued, issuer: _Issued) -> CertFiles:
        return _write_leaf(directory, stem, issued, [issuer])

    return TestPki(
        directory=directory,
        ca_bundle=_write(directory / "ca-bundle.pem", _pem(root.cert)),
        root_cert=_write(directory / "root-ca.pem", _pem(root.cert)),
        intermediate_cert=_write(directory / "intermediate-ca.pem", _pem(intermediate.cert)),
        root_crl=_write(directory / "root-ca.crl.pem", root_crl),
        intermediate_crl=_write(directory / "intermediate-ca.crl.pem", intermediate_crl_pem),
        ca_bundle_with_crls=_write(
            directory / "ca-bundle-with-crls.pem",
            _pem(root.cert) + _pem(intermediate.cert) + root_crl + intermediate_crl_pem,
        ),
        server=leaf("server", server, intermediate),
        clients=MappingProxyType(
            {name: leaf(_file_stem(name), issued, intermediate) for name, issued in clients.items()}
        ),
        expired_client=leaf("client-expired", expired, intermediate),
        revoked_client=leaf("client-revoked", revoked, intermediate),
        rogue_ca_cert=_write(directory / "rogue-root-ca.pem", _pem(rogue_root.cert)),
        rogue_client=leaf("client-rogue", rogue, rogue_root),
        expired_server=leaf("server-expired", expired_server, intermediate),
        not_yet_valid_server=leaf("server-not-yet-valid", future_server, intermediate),
        revoked_server=leaf("server-revoked", revoked_server, intermediate),
        rogue_server=leaf("server-rogue", rogue_server, rogue_root),
        other_host_server=leaf("server-other-host", other_host, intermediate),
    )
