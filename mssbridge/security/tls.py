"""TLS contexts for MSSanté peers: TLS 1.2+, forward-secret AEAD ciphers, IGC-Santé anchors only."""

from __future__ import annotations

import datetime as dt
import logging
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mssbridge.config import TlsSection
from mssbridge.errors import ConfigError
from mssbridge.security import certinfo

log = logging.getLogger("mssbridge.tls")

# TLS 1.2 suites with ephemeral ECDH and an AEAD cipher; TLS 1.3 suites all qualify already.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!SHA1"

# OpenSSL alert reasons meaning "the peer does not accept our certificate" (or we theirs):
# retrying will not help until an operator changes a certificate or a trust anchor.
CERTIFICATE_ALERTS = (
    "CERTIFICATE_REQUIRED",
    "BAD_CERTIFICATE",
    "UNKNOWN_CA",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "CERTIFICATE_UNKNOWN",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
    "HANDSHAKE_FAILURE",
)


class TlsRefused(ConfigError):
    """The TLS handshake with a peer failed over certificates, one side refusing the other.

    This is a configuration problem (wrong, expired or revoked certificate, wrong trust
    anchors), not a transient one: callers should keep the work queued and alert an
    operator instead of retrying blindly or rejecting the message.
    """


def _require_file(key: str, path: Path) -> None:
    if not path.is_file():
        raise ConfigError(f"tls.{key}: file not found: {path}")


def _base_context(protocol: ssl._SSLMethod) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _load_anchors(context: ssl.SSLContext, ca_file: Path, crl_files: Sequence[Path]) -> None:
    """Trust only the certificates of ``ca_file``; never the system store."""
    _require_file("ca_file", ca_file)
    try:
        context.load_verify_locations(cafile=str(ca_file))
    except ssl.SSLError as exc:
        raise ConfigError(f"tls.ca_file: no usable PEM certificate in {ca_file}: {exc}") from exc
    if context.cert_store_stats()["x509_ca"] == 0:
        raise ConfigError(f"tls.ca_file: {ca_file} holds no CA certificate")
    if crl_files:
        _load_crls(context, ca_file, crl_files)


def _usable_crls(
    crl_files: Sequence[Path], now: dt.datetime
) -> list[x509.CertificateRevocationList]:
    """Every CRL of ``crl_files`` (PEM or DER); an expired one is an error, not a warning.

    OpenSSL fails every handshake whose chain needs an expired CRL ("CRL has expired"):
    saying so when the context is built names the file to refresh.
    """
    crls = []
    for path in crl_files:
        if not path.is_file():
            raise ConfigError(f"tls.crl_files: file not found: {path}")
        for crl in certinfo.load_crls(path):
            if crl.next_update_utc is not None and crl.next_update_utc < now:
                raise ConfigError(
                    f"tls.crl_files: the CRL of {crl.issuer.rfc4514_string()} in {path} expired "
                    f"on {crl.next_update_utc:%Y-%m-%d %H:%M} UTC "
                    "(run 'mssbridge certs fetch-crl')"
                )
            crls.append(crl)
    return crls


def _load_crls(context: ssl.SSLContext, ca_file: Path, crl_files: Sequence[Path]) -> None:
    """Load the CRLs and turn revocation checking on (see :func:`certinfo.crl_mode`).

    ``ssl`` reads CRLs from PEM files only: DER ones are converted through a temporary file.
    """
    crls = _usable_crls(crl_files, dt.datetime.now(dt.UTC))
    pem = b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)
    with tempfile.NamedTemporaryFile(prefix="mssbridge-crl-", suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        try:
            context.load_verify_locations(cafile=handle.name)
        except ssl.SSLError as exc:
            raise ConfigError(f"tls.crl_files: OpenSSL cannot load the CRLs: {exc}") from exc
    mode = certinfo.crl_mode(crls, certinfo.load_certificates(ca_file))
    context.verify_flags |= (
        ssl.VERIFY_CRL_CHECK_CHAIN if mode == "chain" else ssl.VERIFY_CRL_CHECK_LEAF
    )


def _load_own_certificate(context: ssl.SSLContext, tls: TlsSection) -> None:
    _require_file("cert_file", tls.cert_file)
    _require_file("key_file", tls.key_file)
    try:
        context.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"tls.cert_file {tls.cert_file} / tls.key_file {tls.key_file}: cannot load the "
            f"certificate chain and its key (not PEM, encrypted, or not a matching pair): {exc}"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(f"tls: cannot read {exc.filename}: permission denied") from exc


def _crl_files(tls: TlsSection, crl_file: Path | None) -> tuple[Path, ...]:
    return (*tls.crl_files, crl_file) if crl_file is not None else tls.crl_files


def client_context(tls: TlsSection, *, crl_file: Path | None = None) -> ssl.SSLContext:
    """A context to reach an MSSanté server, presenting our organisation certificate.

    The server certificate must chain to ``tls.ca_file`` and, with ``tls.crl_files`` (or
    ``crl_file``), not be revoked; its name is checked when ``tls.check_hostname`` is set.
    """
    context = _base_context(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = tls.check_hostname
    _load_anchors(context, tls.ca_file, _crl_files(tls, crl_file))
    _load_own_certificate(context, tls)
    return context


def server_context(
    tls: TlsSection, *, crl_file: Path | None = None, require_client_cert: bool = True
) -> ssl.SSLContext:
    """A context to accept MSSanté peers (gateway mode); their certificates chain to ``ca_file``."""
    context = _base_context(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _load_anchors(context, tls.ca_file, _crl_files(tls, crl_file))
    _load_own_certificate(context, tls)
    return context


def is_certificate_refusal(exc: BaseException) -> bool:
    """True when ``exc`` is a TLS failure about certificates (ours or the peer's)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    if isinstance(exc, ssl.SSLError):
        reason = (exc.reason or "").upper()
        return any(alert in reason for alert in CERTIFICATE_ALERTS)
    return False


# OpenSSL X509_V_ERR_* codes (x509_vfy.h) met when judging a server certificate.
_UNKNOWN_CA = "unknown CA: it does not chain to an anchor of tls.ca_file"
VERIFY_REASONS = {
    2: _UNKNOWN_CA,  # unable to get issuer certificate
    3: "no CRL of its issuer in tls.crl_files (unable to get certificate CRL)",
    7: "bad certificate signature",
    8: "bad CRL signature (tls.crl_files)",
    9: "certificate not yet valid",
    10: "certificate has expired",
    11: "CRL not yet valid (tls.crl_files)",
    12: "CRL has expired (tls.crl_files): run 'mssbridge certs fetch-crl'",
    18: _UNKNOWN_CA,  # self-signed certificate
    19: _UNKNOWN_CA,  # self-signed certificate in chain
    20: _UNKNOWN_CA,  # unable to get local issuer certificate
    21: _UNKNOWN_CA,  # unable to verify the first certificate
    23: "certificate revoked (tls.crl_files)",
    24: "invalid CA certificate in the chain",
    26: "certificate not meant for a TLS server (key usage)",
    62: "hostname mismatch: the certificate does not name the host connected to",
    64: "IP address mismatch: the certificate does not name the address connected to",
}
# TLS alerts the server sends when it refuses our certificate (OpenSSL reason names).
ALERT_REASONS = {
    "CERTIFICATE_EXPIRED": "our certificate has expired",
    "CERTIFICATE_REVOKED": "our certificate is revoked",
    "UNKNOWN_CA": "unknown CA: the server does not trust the issuer of our certificate",
    "CERTIFICATE_REQUIRED": "no certificate presented",
    "BAD_CERTIFICATE": "bad certificate",
    "UNSUPPORTED_CERTIFICATE": "unsupported certificate",
    "CERTIFICATE_UNKNOWN": "certificate not accepted",
}


def refusal_reason(exc: BaseException) -> str:
    """The short reason of a certificate refusal: "certificate has expired", "revoked"…"""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return VERIFY_REASONS.get(exc.verify_code, exc.verify_message or "verification failed")
    reason = (exc.reason or "") if isinstance(exc, ssl.SSLError) else ""
    found = next((text for name, text in ALERT_REASONS.items() if name in reason.upper()), None)
    return found or reason or str(exc)


def describe_refusal(exc: BaseException, peer: str) -> str:
    """A one-line operator message for a certificate refusal on ``peer``, naming the reason."""
    reason = refusal_reason(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = f" [{exc.verify_message}]" if exc.verify_message != reason else ""
        return f"{peer}: the server certificate is not trusted: {reason}{detail}"
    return f"{peer}: the server refused our client certificate (tls.cert_file): {reason}"


class TlsContexts:
    """The client context of a running bridge, rebuilt from the files by :meth:`reload`.

    Each connection takes :attr:`client` when it opens and keeps that context: a reload
    changes what later connections present and trust, never a connection in progress.
    A reload that finds broken files (unreadable, key not matching, expired certificate or
    CRL) keeps the context in use and logs why.
    """

    def __init__(self, tls: TlsSection) -> None:
        self._tls = tls
        self._client, _ = self._build()
        self.generation = 0

    @property
    def client(self) -> ssl.SSLContext:
        return self._client

    def _build(self) -> tuple[ssl.SSLContext, certinfo.TrustReport]:
        context = client_context(self._tls)
        report = certinfo.inspect(self._tls)
        if report.errors:
            raise ConfigError("; ".join(report.errors))
        for warning in report.warnings:
            log.warning("%s", warning)
        return context, report

    def reload(self) -> bool:
        """Re-read certificates, key, anchors and CRLs; True when the new context is in use."""
        try:
            context, report = self._build()
        except (ConfigError, OSError) as exc:
            log.error("TLS reload refused, the previous certificates stay in use: %s", exc)
            return False
        self._client = context
        self.generation += 1
        cert = report.certificate
        log.info(
            "TLS reloaded (generation %d): %s, valid until %s, %d CRL(s), revocation check %s",
            self.generation,
            cert.subject,
            f"{cert.not_after:%Y-%m-%d}",
            len(report.crls),
            report.crl_mode or "off",
        )
        return True
