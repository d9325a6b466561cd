"""Pure inspection of the configured IGC-Santé certificates and CRLs: validity, chain, expiry."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mssbridge.config import TlsSection
from mssbridge.errors import ConfigError

EXPIRY_WARNING_DAYS = 30
CRL_WARNING = dt.timedelta(hours=24)
MAX_CHAIN_DEPTH = 8

CrlMode = Literal["chain", "leaf"]


def _now(now: dt.datetime | None) -> dt.datetime:
    return now or dt.datetime.now(dt.UTC)


def _is_pem(data: bytes) -> bool:
    return b"-----BEGIN " in data


def load_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate of a PEM file (in order), or the one of a DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        if _is_pem(data):
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise ConfigError(f"{path}: no readable certificate (PEM or DER): {exc}") from exc


def _pem_blocks(data: bytes, label: bytes) -> list[bytes]:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    blocks, start = [], data.find(begin)
    while start != -1:
        stop = data.find(end, start)
        if stop == -1:
            break
        blocks.append(data[start : stop + len(end)] + b"\n")
        start = data.find(begin, stop)
    return blocks


def parse_crls(data: bytes, origin: str) -> list[x509.CertificateRevocationList]:
    """Every CRL of PEM bytes (certificates in between are skipped), or the one of DER bytes."""
    try:
        if _is_pem(data):
            crls = [x509.load_pem_x509_crl(b) for b in _pem_blocks(data, b"X509 CRL")]
        else:
            crls = [x509.load_der_x509_crl(data)]
    except ValueError as exc:
        raise ConfigError(f"{origin}: not a readable CRL (PEM or DER): {exc}") from exc
    if not crls:
        raise ConfigError(f"{origin}: holds no CRL")
    return crls


def load_crls(path: Path) -> list[x509.CertificateRevocationList]:
    """The CRLs of a PEM or DER file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"CRL file {path}: cannot read: {exc.strerror}") from exc
    return parse_crls(data, f"CRL file {path}")


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


@dataclass(frozen=True)
class CertificateInfo:
    """What an operator needs to know about one certificate."""

    subject: str
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        return cls(
            subject=_name(cert.subject),
            issuer=_name(cert.issuer),
            serial=cert.serial_number,
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    def days_left(self, now: dt.datetime | None = None) -> int:
        """Whole days until expiry; negative once expired."""
        return (self.not_after - _now(now)).days

    def state(self, now: dt.datetime | None = None) -> str:
        moment = _now(now)
        if moment < self.not_before:
            return "not yet valid"
        return "expired" if moment > self.not_after else "valid"


def certificate_days_left(cert_file: Path, now: dt.datetime | None = None) -> int:
    """Days left before the first certificate of ``cert_file`` expires (for checks, metrics)."""
    return CertificateInfo.of(load_certificates(cert_file)[0]).days_left(now)


@dataclass(frozen=True)
class ChainStatus:
    """Whether a certificate chains to the trust anchors, and the path found."""

    ok: bool
    detail: str
    path: tuple[str, ...] = ()


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _walk(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
) -> ChainStatus:
    """Follow issuer names and check each signature with the issuer's public key."""
    path = [leaf]
    current = leaf
    for _ in range(MAX_CHAIN_DEPTH):
        anchor = next((a for a in anchors if _signed_by(current, a)), None)
        if anchor is not None:
            if anchor != current:
                path.append(anchor)
            return ChainStatus(True, "signatures verified", tuple(_name(c.subject) for c in path))
        issuer = next((c for c in untrusted if c not in path and _signed_by(current, c)), None)
        if issuer is None:
            return ChainStatus(
                False,
                f"issuer {_name(current.issuer)!r} of {_name(current.subject)!r} is neither in "
                "tls.ca_file nor in the chain of tls.cert_file (unknown CA)",
                tuple(_name(c.subject) for c in path),
            )
        path.append(issuer)
        current = issuer
    return ChainStatus(False, f"no anchor within {MAX_CHAIN_DEPTH} certificates")


def _validation_time(path: Sequence[x509.Certificate], now: dt.datetime) -> dt.datetime | None:
    """``now`` if every certificate of ``path`` is valid then, else a moment when all are.

    The chain is judged apart from expiry (told separately); None when the validity
    periods do not overlap at all.
    """
    start = max(c.not_valid_before_utc for c in path)
    end = min(c.not_valid_after_utc for c in path)
    if start <= now <= end:
        return now
    return start + (end - start) / 2 if start <= end else None


def _library_verify(
    leaf: x509.Certificate,
    untrusted: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    when: dt.datetime,
) -> str | None:
    """RFC 5280 path validation by cryptography's verifier; None when it passes or is absent."""
    try:
        from cryptography.x509 import verification as v
    except ImportError:  # cryptography < 43: the signature walk alone decides
        return None
    if not hasattr(v, "ExtensionPolicy"):
        return None
    # IGC-Santé profiles are not the Web PKI's: check signatures, validity, CA basic
    # constraints and path length, but not Web PKI extension rules.
    ca_policy = v.ExtensionPolicy.permit_all().require_present(
        x509.BasicConstraints, v.Criticality.AGNOSTIC, None
    )
    verifier = (
        v.PolicyBuilder()
        .store(v.Store(list(anchors)))
        .time(when)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(ca_policy=ca_policy, ee_policy=v.ExtensionPolicy.permit_all())
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, list(untrusted))
    except v.VerificationError as exc:
        return str(exc)
    return None


def chain_status(
    chain: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    now: dt.datetime | None = None,
) -> ChainStatus:
    """Does ``chain[0]`` chain to ``anchors`` through ``chain[1:]``?"""
    if not anchors:
        return ChainStatus(False, "tls.ca_file holds no certificate")
    leaf, untrusted = chain[0], chain[1:]
    walked = _walk(leaf, untrusted, anchors)
    if not walked.ok:
        return walked
    on_path = [c for c in (*chain, *anchors) if _name(c.subject) in walked.path]
    when = _validation_time(on_path, _now(now))
    if when is None:
        return ChainStatus(
            True, "signatures verified (validity periods never overlap)", walked.path
        )
    problem = _library_verify(leaf, untrusted, anchors, when)
    if problem is not None:
        return ChainStatus(False, f"path validation failed: {problem}", walked.path)
    return ChainStatus(True, "verified up to " + walked.path[-1], walked.path)


@dataclass(frozen=True)
class CrlInfo:
    """One CRL: who issued it, until when it may be used, and whether its signature holds."""

    source: str
    issuer: str
    last_update: dt.datetime
    next_update: dt.datetime | None
    revoked: int
    signature: Literal["valid", "invalid", "issuer unknown"]

    def expired(self, now: dt.datetime | None = None) -> bool:
        return self.next_update is not None and _now(now) > self.next_update

    def not_yet_valid(self, now: dt.datetime | None = None) -> bool:
        return _now(now) < self.last_update


def crl_info(
    crl: x509.CertificateRevocationList, source: str, issuers: Sequence[x509.Certificate]
) -> CrlInfo:
    """Describe ``crl``, checking its signature with the matching certificate of ``issuers``."""
    candidates = [c for c in issuers if c.subject == crl.issuer]
    signature: Literal["valid", "invalid", "issuer unknown"] = "issuer unknown"
    if candidates:
        valid = any(_crl_signed_by(crl, c) for c in candidates)
        signature = "valid" if valid else "invalid"
    return CrlInfo(
        source=source,
        issuer=_name(crl.issuer),
        last_update=crl.last_update_utc,
        next_update=crl.next_update_utc,
        revoked=len(crl),
        signature=signature,
    )


def _crl_signed_by(crl: x509.CertificateRevocationList, cert: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(cert.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


def crl_mode(
    crls: Sequence[x509.CertificateRevocationList], anchors: Sequence[x509.Certificate]
) -> CrlMode:
    """How OpenSSL checks revocation with these CRLs.

    With a CRL issued by a trust anchor (an IGC-Santé root's ARL), every CA of a peer's
    chain is checked, so the CRL of each intermediate CA is needed as well ("chain").
    With only intermediate CRLs, only the peer's own certificate is checked ("leaf").
    """
    roots = {a.subject for a in anchors}
    return "chain" if any(crl.issuer in roots for crl in crls) else "leaf"


@dataclass
class TrustReport:
    """Everything ``mssbridge certs show`` prints and ``check`` judges."""

    certificate: CertificateInfo
    chain: ChainStatus
    crls: list[CrlInfo]
    crl_mode: CrlMode | None
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and self.chain.ok


def _certificate_verdicts(report: TrustReport, now: dt.datetime) -> None:
    cert = report.certificate
    state = cert.state(now)
    if state == "expired":
        report.errors.append(f"tls.cert_file: expired on {cert.not_after:%Y-%m-%d}")
    elif state == "not yet valid":
        report.errors.append(f"tls.cert_file: not valid before {cert.not_before:%Y-%m-%d}")
    elif cert.days_left(now) < EXPIRY_WARNING_DAYS:
        report.warnings.append(
            f"tls.cert_file: expires in {cert.days_left(now)} days ({cert.not_after:%Y-%m-%d})"
        )
    if not report.chain.ok:
        report.warnings.append(
            f"tls.cert_file does not chain to tls.ca_file: {report.chain.detail}"
        )


def _crl_verdicts(report: TrustReport, now: dt.datetime) -> None:
    for crl in report.crls:
        where = f"CRL {crl.source} ({crl.issuer})"
        if crl.signature == "invalid":
            report.errors.append(f"{where}: signature does not match its issuer's certificate")
        elif crl.signature == "issuer unknown":
            report.warnings.append(
                f"{where}: issuer not in tls.ca_file or tls.cert_file; signature not checked here"
            )
        if crl.expired(now):
            assert crl.next_update is not None
            report.errors.append(
                f"{where}: expired since {crl.next_update:%Y-%m-%d %H:%M} UTC "
                "(run 'mssbridge certs fetch-crl')"
            )
        elif crl.not_yet_valid(now):
            report.errors.append(f"{where}: not valid before {crl.last_update:%Y-%m-%d %H:%M} UTC")
        elif crl.next_update is not None and crl.next_update - now < CRL_WARNING:
            report.warnings.append(f"{where}: next update due {crl.next_update:%Y-%m-%d %H:%M} UTC")


def inspect(tls: TlsSection, now: dt.datetime | None = None) -> TrustReport:
    """Read ``tls.cert_file``, ``tls.ca_file`` and ``tls.crl_files``; judge them at ``now``.

    Unreadable files raise :class:`ConfigError`; everything else lands in the report.
    """
    moment = _now(now)
    chain = load_certificates(tls.cert_file)
    anchors = load_certificates(tls.ca_file)
    crls: list[CrlInfo] = []
    raw_crls: list[x509.CertificateRevocationList] = []
    for path in tls.crl_files:
        for crl in load_crls(path):
            raw_crls.append(crl)
            crls.append(crl_info(crl, str(path), [*anchors, *chain[1:]]))
    report = TrustReport(
        certificate=CertificateInfo.of(chain[0]),
        chain=chain_status(chain, anchors, moment),
        crls=crls,
        crl_mode=crl_mode(raw_crls, anchors) if raw_crls else None,
    )
    _certificate_verdicts(report, moment)
    _crl_verdicts(report, moment)
    return report
