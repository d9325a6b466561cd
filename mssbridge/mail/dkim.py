"""DKIM (RFC 6376) with dkimpy: sign outgoing mail, verify incoming mail against known keys."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mssbridge.config import DkimSection
from mssbridge.errors import ConfigError

log = logging.getLogger("mssbridge.dkim")

# Below this size signing costs a few milliseconds: done on the event loop. Above, in a thread.
INLINE_SIGN_LIMIT = 256 * 1024
CANONICALIZATION = (b"relaxed", b"relaxed")
DnsFunc = Callable[..., bytes | None]


class DkimStatus(StrEnum):
    """Verdicts of RFC 8601 for the dkim method."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


@dataclass(frozen=True)
class DkimResult:
    status: DkimStatus
    domain: str = ""
    selector: str = ""
    reason: str = ""

    @property
    def header(self) -> str:
        """The verdict as an ``Authentication-Results`` method clause."""
        text = f"dkim={self.status}"
        if self.reason:
            text += f" ({self.reason})"
        if self.domain:
            text += f" header.d={self.domain}"
        if self.selector:
            text += f" header.s={self.selector}"
        return text

    @property
    def failed(self) -> bool:
        """A signature that is wrong or cannot be checked for good (not a DNS hiccup)."""
        return self.status in (DkimStatus.FAIL, DkimStatus.PERMERROR)


@dataclass(frozen=True)
class DkimSigner:
    """Signs with one private key as ``selector._domainkey.domain``."""

    selector: str
    domain: str
    private_key: bytes = field(repr=False)

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature header field prepended."""
        signature = dkim.sign(
            message,
            self.selector.encode("ascii"),
            self.domain.encode("ascii"),
            self.private_key,
            canonicalize=CANONICALIZATION,
        )
        return bytes(signature) + message

    async def sign_async(self, message: bytes) -> bytes:
        if len(message) <= INLINE_SIGN_LIMIT:
            return self.sign(message)
        return await asyncio.to_thread(self.sign, message)


def _record_name(domain: str, selector: str) -> str:
    return f"{selector}._domainkey.{domain}.".lower()


def _txt_record(public_key: str) -> bytes:
    value = "".join(public_key.split())
    if "p=" not in value:
        value = f"v=DKIM1; k=rsa; p={value}"
    return value.encode("ascii")


class _Lookup:
    """A dnsfunc for dkimpy: trusted keys first, then DNS; remembers what it found."""

    def __init__(self, trusted: Mapping[str, bytes], fallback: DnsFunc | None) -> None:
        self.trusted = trusted
        self.fallback = fallback
        self.outcome = ""

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        key = (name.decode("ascii") if isinstance(name, bytes) else name).lower()
        key = key if key.endswith(".") else key + "."
        if key in self.trusted:
            self.outcome = "found"
            return self.trusted[key]
        if self.fallback is None:
            self.outcome = "missing"
            return None
        try:
            record = self.fallback(key.encode("ascii"), timeout=timeout)
        except Exception as exc:
            self.outcome = "temperror"
            raise dkim.DnsTimeoutError(type(exc).__name__) from exc
        self.outcome = "found" if record else "missing"
        return record


@dataclass(frozen=True)
class DkimVerifier:
    """Verifies DKIM signatures; public keys come from ``trusted`` then, optionally, DNS."""

    trusted: Mapping[str, bytes] = field(default_factory=dict)
    dnsfunc: DnsFunc | None = None

    @classmethod
    def from_keys(
        cls, trusted_keys: Mapping[str, str], dnsfunc: DnsFunc | None = None
    ) -> DkimVerifier:
        """``trusted_keys`` maps "domain/selector" to a TXT record or a bare base64 key."""
        trusted = {}
        for name, public_key in trusted_keys.items():
            domain, sep, selector = name.partition("/")
            if not sep or not domain or not selector:
                raise ConfigError(f"dkim.trusted_keys: {name!r} must read 'domain/selector'")
            trusted[_record_name(domain, selector)] = _txt_record(public_key)
        return cls(trusted, dnsfunc)

    def verify(self, message: bytes) -> DkimResult:
        """Pass when one signature verifies; otherwise the verdict of the first one."""
        try:
            checker = dkim.DKIM(message)
            signatures = [
                dkim.util.parse_tag_value(value)
                for name, value in checker.headers
                if name.lower() == b"dkim-signature"
            ]
        except dkim.DKIMException as exc:
            return DkimResult(DkimStatus.PERMERROR, reason=_short(exc))
        if not signatures:
            return DkimResult(DkimStatus.NONE)
        verdicts = [self._verify_one(checker, idx, tags) for idx, tags in enumerate(signatures)]
        return next((v for v in verdicts if v.status == DkimStatus.PASS), verdicts[0])

    def _verify_one(self, checker: dkim.DKIM, idx: int, tags: Mapping[bytes, bytes]) -> DkimResult:
        domain = tags.get(b"d", b"").decode("ascii", "replace")
        selector = tags.get(b"s", b"").decode("ascii", "replace")
        lookup = _Lookup(self.trusted, self.dnsfunc)
        try:
            ok = checker.verify(idx=idx, dnsfunc=lookup)
        except dkim.ValidationError as exc:  # e.g. the body hash does not match
            return DkimResult(DkimStatus.FAIL, domain, selector, _short(exc))
        except dkim.DKIMException as exc:
            return DkimResult(DkimStatus.PERMERROR, domain, selector, _short(exc))
        if ok:
            return DkimResult(DkimStatus.PASS, domain, selector)
        if lookup.outcome == "temperror":
            return DkimResult(DkimStatus.TEMPERROR, domain, selector, "key lookup failed")
        if lookup.outcome == "missing":
            return DkimResult(DkimStatus.PERMERROR, domain, selector, "no key")
        return DkimResult(DkimStatus.FAIL, domain, selector, "signature did not verify")

    async def verify_async(self, message: bytes) -> DkimResult:
        # In a thread: dkimpy is pure Python and the DNS fallback blocks.
        return await asyncio.to_thread(self.verify, message)


@dataclass(frozen=True)
class Dkim:
    """What the flows need: an optional signer, a verifier and the inbound policy."""

    signer: DkimSigner | None = None
    verifier: DkimVerifier = field(default_factory=DkimVerifier)
    reject_failures: bool = False

    async def sign(self, message: bytes) -> bytes:
        return await self.signer.sign_async(message) if self.signer else message


def _short(exc: Exception) -> str:
    """dkimpy's explanation without the values it quotes (hashes, tag values)."""
    return (str(exc).split("(", 1)[0].split(":", 1)[0].strip() or type(exc).__name__)[:60]


def load_private_key(path: Path) -> bytes:
    """Read a DKIM private key (PEM), refusing one readable by others."""
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"dkim.key_file: cannot read {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"dkim.key_file: {path} must not be readable by others (chmod 600)")
    if b"PRIVATE KEY-----" not in data:
        raise ConfigError(f"dkim.key_file: {path} is not a PEM private key")
    return data


def from_settings(section: DkimSection, mailbox_address: str) -> Dkim:
    """Signer (when a key is configured), verifier and policy; a bad key fails at start."""
    signer = None
    if section.key_file is not None:
        domain = section.domain or mailbox_address.rsplit("@", 1)[-1].lower()
        signer = DkimSigner(section.selector, domain, load_private_key(section.key_file))
        try:
            signer.sign(b"From: a@b\r\nSubject: key check\r\n\r\nx\r\n")
        except Exception as exc:
            raise ConfigError(f"dkim.key_file: unusable key ({type(exc).__name__})") from exc
    fallback: DnsFunc | None = dkim.get_txt if section.dns_fallback else None
    verifier = DkimVerifier.from_keys(section.trusted_keys, fallback)
    return Dkim(signer, verifier, section.verify_policy == "reject")


def generate_key(selector: str, domain: str, directory: Path, bits: int = 2048) -> tuple[Path, str]:
    """Write ``<selector>.private`` (0600) and return it with the DNS TXT record to publish."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{selector}.private"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    value = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode('ascii')}"
    # A TXT string holds at most 255 characters: the zone file line splits the record.
    chunks = " ".join(f'"{value[i : i + 255]}"' for i in range(0, len(value), 255))
    (directory / f"{selector}.txt").write_text(
        f"{_record_name(domain, selector)} IN TXT ( {chunks} )\n", encoding="ascii"
    )
    return path, value
