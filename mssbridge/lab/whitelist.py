"""A signed test whitelist for the lab, shaped like the ANS one, and its import into a bridge."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner

from mssbridge import config as config_module
from mssbridge.directory.whitelist import NAMESPACE, Whitelist, read_whitelist
from mssbridge.lab.pki import TestPki

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class ListedDomain:
    """What one ``Domaine`` element of the list says."""

    domain: str
    operator_dn: str
    description: str = ""
    updated_at: datetime | None = None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def whitelist_document(entries: Sequence[ListedDomain], generated_at: datetime) -> etree._Element:
    """The unsigned ``ListeBlancheMSSante`` document."""
    root = etree.Element(f"{{{NAMESPACE}}}ListeBlancheMSSante", nsmap={None: NAMESPACE})
    etree.SubElement(root, f"{{{NAMESPACE}}}DateDeGeneration").text = _stamp(generated_at)
    domains = etree.SubElement(root, f"{{{NAMESPACE}}}ListeDomaines")
    for entry in entries:
        element = etree.SubElement(domains, f"{{{NAMESPACE}}}Domaine")
        values = {
            "Nom": entry.domain,
            "Description": entry.description,
            "DNCertificatOperateur": entry.operator_dn,
            "ResponsableContact": "support@lab.test",
            "SupportContact": "support@lab.test",
            "DateMAJ": _stamp(entry.updated_at or generated_at),
        }
        for name, value in values.items():
            etree.SubElement(element, f"{{{NAMESPACE}}}{name}").text = value
    return root


def sign_whitelist(
    entries: Sequence[ListedDomain],
    generated_at: datetime,
    key: SigningKey,
    chain: Sequence[x509.Certificate],
) -> bytes:
    """The list signed like the ANS signs it: enveloped, exclusive c14n, SHA-256."""
    algorithm = (
        SignatureMethod.ECDSA_SHA256
        if isinstance(key, ec.EllipticCurvePrivateKey)
        else SignatureMethod.RSA_SHA256
    )
    signer = XMLSigner(
        signature_algorithm=algorithm,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    signed = signer.sign(whitelist_document(entries, generated_at), key=key, cert=list(chain))
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))


def write_lab_whitelist(
    path: Path, pki: TestPki, domains: Sequence[str], generated_at: datetime | None = None
) -> Path:
    """The lab's domains, served by the lab's mail server, signed with its key and chain."""
    server = x509.load_pem_x509_certificate(pki.server.cert.read_bytes())
    intermediate = x509.load_pem_x509_certificate(pki.intermediate_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise TypeError("the lab server key is neither RSA nor EC")
    dn = server.subject.rfc4514_string()
    entries = [ListedDomain(d, dn, f"Domaine de test {d}") for d in domains]
    when = generated_at or datetime.now(tz=UTC)
    data = sign_whitelist(entries, when, key, [server, intermediate])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


async def import_whitelist(config: Path, whitelist_file: Path) -> Whitelist:
    """What ``mssbridge whitelist import`` does, for code that holds no terminal."""
    from mssbridge.daemon import open_store
    from mssbridge.store.whitelist_repo import WhitelistRepo

    settings = config_module.load(config)
    whitelist = read_whitelist(whitelist_file, ca_file=settings.whitelist.ca_file)
    store = await open_store(settings)
    try:
        await WhitelistRepo(store).replace(whitelist, source=str(whitelist_file))
    finally:
        await store.engine.dispose()
    return whitelist


def provision_lab_whitelist(config: Path, pki: TestPki, domains: Sequence[str]) -> Path:
    """Sign the lab whitelist next to ``config`` and import it into that bridge's store.

    Runs in a thread of its own, so it works from synchronous code and from inside an event
    loop alike (the end-to-end fixtures call it from async tests).
    """
    path = write_lab_whitelist(config.parent / "listeblanchemssante.xml", pki, domains)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, import_whitelist(config, path)).result()
    return path
