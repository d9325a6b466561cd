"""The signed MSSanté whitelist (``listeblanchemssante.xml``): safe parsing and XML-DSig check."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree
from signxml import DigestAlgorithm, SignatureConfiguration, SignatureMethod, XMLVerifier
from signxml.exceptions import InvalidCertificate, InvalidDigest, SignXMLException

from mssbridge.errors import BridgeError

NAMESPACE = "https://listeblanche.mssante.fr/schema"
DSIG_NAMESPACE = "http://www.w3.org/2000/09/xmldsig#"
MAX_FILE_BYTES = 64 * 1024 * 1024
MAX_DN_LENGTH = 1024
MAX_DESCRIPTION_LENGTH = 1024
NOT_ANCHORED = "signature valid, signer not chained to a configured anchor (whitelist.ca_file)"

# SHA-1 is refused; RSA (what the ANS uses) and ECDSA over SHA-2 are accepted.
_SIGNATURE_METHODS = frozenset(
    {
        SignatureMethod.RSA_SHA256,
        SignatureMethod.RSA_SHA384,
        SignatureMethod.RSA_SHA512,
        SignatureMethod.ECDSA_SHA256,
        SignatureMethod.ECDSA_SHA384,
        SignatureMethod.ECDSA_SHA512,
    }
)
_DIGESTS = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class WhitelistError(BridgeError):
    """The file is not a whitelist the bridge can trust; nothing of it may be used."""


class SignerValidityError(WhitelistError):
    """The list was generated outside its signer's validity; an administrator may accept it."""


@dataclass(frozen=True)
class SignerInfo:
    """The certificate that signed the list, as embedded in the signature's KeyInfo."""

    subject: str
    issuer: str
    serial: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str


@dataclass(frozen=True)
class WhitelistEntry:
    """One listed domain with the DN of one certificate its operator's servers present."""

    domain: str
    operator_dn: str
    description: str
    updated_at: datetime | None


@dataclass(frozen=True)
class Whitelist:
    """A verified whitelist: only what the signature covers, one entry per (domain, DN)."""

    generated_at: datetime
    signer: SignerInfo
    anchored: bool
    trust: str
    warnings: tuple[str, ...]
    entries: tuple[WhitelistEntry, ...]
    source_entries: int
    sha256: str

    @property
    def domains(self) -> frozenset[str]:
        return frozenset(e.domain for e in self.entries)

    @property
    def operator_dns(self) -> frozenset[str]:
        return frozenset(e.operator_dn for e in self.entries)


def read_whitelist(
    path: Path,
    *,
    ca_file: Path | None = None,
    accept_expired_signer: bool = False,
    now: datetime | None = None,
) -> Whitelist:
    """Read ``path`` and return the verified list (see :func:`parse_whitelist`)."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise WhitelistError(f"{path}: {size} bytes, more than a whitelist can be")
        data = path.read_bytes()
    except OSError as exc:
        raise WhitelistError(f"cannot read {path}: {exc.strerror}") from exc
    return parse_whitelist(
        data, ca_file=ca_file, accept_expired_signer=accept_expired_signer, now=now
    )


def parse_whitelist(
    data: bytes,
    *,
    ca_file: Path | None = None,
    accept_expired_signer: bool = False,
    now: datetime | None = None,
) -> Whitelist:
    """Verify the enveloped signature of ``data`` and return the signed list.

    The signer certificate is checked at the list's ``DateDeGeneration``, not at ``now``: a list
    signed while its signer was valid stays verifiable. A signer expired since then gives a
    warning; a list generated outside the signer's validity raises SignerValidityError unless
    ``accept_expired_signer``. With ``ca_file`` (IGC-Santé roots and intermediates, PEM) the
    signer must chain to those anchors; without it the result says it is not anchored.
    """
    if len(data) > MAX_FILE_BYTES:
        raise WhitelistError(f"{len(data)} bytes, more than a whitelist can be")
    now = now or datetime.now(tz=UTC)
    root = _parse_xml(data)
    claimed_date = _generation_date(root)
    chain = _embedded_certificates(root)
    signer = _leaf(chain)
    info = _signer_info(signer)
    # Within the signer's validity the check time is the generation date itself. Outside it,
    # the signature is still checked (at the nearest valid instant) so that a modified file
    # fails as such, before the administrator is asked about the dates.
    verify_at = min(max(claimed_date, info.not_before), info.not_after)
    signed = _verify(root, signer, ca_file, verify_at)
    generated_at = _generation_date(signed)
    if generated_at != claimed_date:
        raise WhitelistError("the signed DateDeGeneration differs from the one read")
    warnings: list[str] = []
    if verify_at != generated_at:
        problem = (
            f"the list was generated on {generated_at:%Y-%m-%d %H:%M:%S}Z, outside the validity "
            f"of its signer {info.subject} ({info.not_before:%Y-%m-%d} to "
            f"{info.not_after:%Y-%m-%d})"
        )
        if not accept_expired_signer:
            raise SignerValidityError(
                f"{problem}; import it anyway only with --accept-expired-signer"
            )
        warnings.append(f"accepted by the administrator: {problem}")
    elif now > info.not_after:
        warnings.append(
            f"the signer certificate expired on {info.not_after:%Y-%m-%d}; it was valid when the "
            f"list was generated ({generated_at:%Y-%m-%d}): ask the ANS for a newer list"
        )
    elements = signed.findall(f"{{{NAMESPACE}}}ListeDomaines/{{{NAMESPACE}}}Domaine")
    entries = _entries(elements)
    if not entries:
        raise WhitelistError("the signed list holds no domain")
    return Whitelist(
        generated_at=generated_at,
        signer=info,
        anchored=ca_file is not None,
        trust=(
            f"signer chains to the anchors of {ca_file}" if ca_file is not None else NOT_ANCHORED
        ),
        warnings=tuple(warnings),
        entries=entries,
        source_entries=len(elements),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=False,
    )


def _parse_xml(data: bytes) -> etree._Element:
    """Parse without entities, DTDs or network; any DOCTYPE is refused outright."""
    try:
        tree = etree.fromstring(data, parser=_parser()).getroottree()
    except etree.XMLSyntaxError as exc:
        raise WhitelistError(f"not well-formed XML: {exc}") from exc
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise WhitelistError("the file declares a DOCTYPE (entities are never accepted)")
    root = tree.getroot()
    if root.tag != f"{{{NAMESPACE}}}ListeBlancheMSSante":
        raise WhitelistError(
            f"root element is {root.tag}, expected ListeBlancheMSSante in {NAMESPACE}"
        )
    return root


def _generation_date(root: etree._Element) -> datetime:
    text = root.findtext(f"{{{NAMESPACE}}}DateDeGeneration")
    if not text:
        raise WhitelistError("DateDeGeneration is missing")
    try:
        return _timestamp(text)
    except ValueError as exc:
        raise WhitelistError(f"DateDeGeneration {text.strip()[:40]!r} is not a date") from exc


def _timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip())
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _embedded_certificates(root: etree._Element) -> list[x509.Certificate]:
    signatures = root.findall(f"{{{DSIG_NAMESPACE}}}Signature")
    if len(signatures) != 1:
        raise WhitelistError(
            f"expected one enveloped signature under the root, found {len(signatures)}"
        )
    ds = f"{{{DSIG_NAMESPACE}}}"
    found = signatures[0].findall(f"{ds}KeyInfo/{ds}X509Data/{ds}X509Certificate")
    texts = [e.text or "" for e in found]
    if not texts:
        raise WhitelistError("the signature carries no X509Certificate")
    try:
        return [x509.load_der_x509_certificate(base64.b64decode("".join(t.split()))) for t in texts]
    except (ValueError, binascii.Error) as exc:
        raise WhitelistError(f"unreadable signer certificate: {exc}") from exc


def _leaf(chain: Sequence[x509.Certificate]) -> x509.Certificate:
    """The certificate that issued no other one of the chain: the signer."""
    issuers = {c.issuer for c in chain if c.issuer != c.subject}
    leaves = [c for c in chain if c.subject not in issuers]
    if len(leaves) != 1:
        raise WhitelistError("cannot tell the signer among the embedded certificates")
    return leaves[0]


def _signer_info(cert: x509.Certificate) -> SignerInfo:
    return SignerInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=f"{cert.serial_number:x}",
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
    )


def _verify(
    root: etree._Element, signer: x509.Certificate, ca_file: Path | None, when: datetime
) -> etree._Element:
    """signxml's verification at ``when``; returns the signed root, the only part to read."""
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=_SIGNATURE_METHODS,
        digest_algorithms=_DIGESTS,
        verification_time=when,
    )
    verifier = XMLVerifier()
    try:
        if ca_file is not None:
            result = verifier.verify(
                root, ca_pem_file=str(ca_file), expect_config=config, parser=_parser()
            )
        else:
            result = verifier.verify(root, x509_cert=signer, expect_config=config, parser=_parser())
    except InvalidDigest as exc:
        raise WhitelistError(
            f"digest mismatch: the file was changed after it was signed ({exc})"
        ) from exc
    except InvalidCertificate as exc:
        anchors = f"does not chain to the anchors of {ca_file}" if ca_file else "is not valid"
        raise WhitelistError(
            f"signer certificate refused: it {anchors} at {when:%Y-%m-%d %H:%M:%S}Z ({exc})"
        ) from exc
    except (SignXMLException, etree.DocumentInvalid) as exc:
        raise WhitelistError(f"invalid signature: {exc}") from exc
    except OSError as exc:
        raise WhitelistError(f"cannot read whitelist.ca_file {ca_file}: {exc}") from exc
    if isinstance(result, list):
        raise WhitelistError("the signature must cover exactly one reference")
    signed = result.signed_xml
    if signed is None or signed.tag != root.tag:
        raise WhitelistError("the signature does not cover the whole list")
    return signed


def _entries(elements: Sequence[etree._Element]) -> tuple[WhitelistEntry, ...]:
    """One entry per (domain, DN); a repeated pair keeps its most recently updated version."""
    kept: dict[tuple[str, str], WhitelistEntry] = {}
    for index, element in enumerate(elements, 1):
        entry = _entry(element, index)
        key = (entry.domain, entry.operator_dn)
        previous = kept.get(key)
        if previous is None or _newer(entry, previous):
            kept[key] = entry
    return tuple(kept.values())


def _newer(entry: WhitelistEntry, than: WhitelistEntry) -> bool:
    if entry.updated_at is None:
        return False
    return than.updated_at is None or entry.updated_at > than.updated_at


def _entry(element: etree._Element, index: int) -> WhitelistEntry:
    def text(name: str) -> str:
        return (element.findtext(f"{{{NAMESPACE}}}{name}") or "").strip()

    domain = normalize_domain(text("Nom"))
    if not is_domain_name(domain):
        raise WhitelistError(f"entry {index}: {text('Nom')[:80]!r} is not a domain name")
    dn = text("DNCertificatOperateur")
    if not dn or len(dn) > MAX_DN_LENGTH:
        raise WhitelistError(
            f"entry {index} ({domain}): missing or oversized DNCertificatOperateur"
        )
    updated = text("DateMAJ")
    try:
        updated_at = _timestamp(updated) if updated else None
    except ValueError as exc:
        raise WhitelistError(f"entry {index} ({domain}): DateMAJ {updated[:40]!r}") from exc
    return WhitelistEntry(
        domain=domain,
        operator_dn=dn,
        description=text("Description")[:MAX_DESCRIPTION_LENGTH],
        updated_at=updated_at,
    )


def normalize_domain(value: str) -> str:
    """Lower case, no surrounding blanks, no trailing dot; the part after '@' of an address."""
    return value.rsplit("@", 1)[-1].strip().lower().rstrip(".")


def is_domain_name(domain: str) -> bool:
    """A DNS host name of at least two labels (letters, digits, hyphens), 253 characters at most."""
    labels = domain.split(".")
    return len(domain) <= 253 and len(labels) >= 2 and all(_LABEL.match(x) for x in labels)
