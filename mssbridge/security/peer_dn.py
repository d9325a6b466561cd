"""Matching a peer's certificate subject against the whitelist's operator DNs (pure)."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

from cryptography import x509

# One attribute of a distinguished name: its OID (dotted) and its value, normalised.
Attribute = tuple[str, str]
Dn = tuple[Attribute, ...]


def _fold(value: str) -> str:
    """Compare values as X.520 caseIgnoreMatch does: Unicode NFKC, case and spaces folded."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def _normalise(name: x509.Name) -> Dn:
    """The attributes of ``name`` as a sorted multiset, whatever the order they were written."""
    return tuple(
        sorted((attribute.oid.dotted_string, _fold(str(attribute.value))) for attribute in name)
    )


def parse_dn(text: str) -> Dn | None:
    """A whitelist ``DNCertificatOperateur`` (RFC 4514 string), or None when it is unreadable."""
    try:
        return _normalise(x509.Name.from_rfc4514_string(text.strip()))
    except ValueError:
        return None


def certificate_dn(der: bytes) -> tuple[Dn, str]:
    """The subject of a DER certificate: normalised for matching, and as an RFC 4514 string."""
    subject = x509.load_der_x509_certificate(der).subject
    return _normalise(subject), subject.rfc4514_string()


def dn_listed(subject: Dn, listed: Iterable[str]) -> bool:
    """True when ``subject`` equals one of the ``listed`` DNs, attribute by attribute.

    The ANS list writes DNs most specific first (``CN=…,OU=…,O=…,ST=…,C=FR``) while a
    certificate encodes them country first; comparing the attribute multisets makes the
    order irrelevant, and values are compared without regard to case or spacing.
    """
    return bool(subject) and any(parse_dn(entry) == subject for entry in listed)
