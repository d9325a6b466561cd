"""Where mail for a domain goes: its MX hosts by preference (RFC 5321 §5.1, RFC 7505)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mssbridge.errors import Rejected, TemporaryFailure

NO_SUCH_DOMAIN = "5.1.2"  # RFC 3463: bad destination system address
NULL_MX = "5.1.10"  # RFC 7505 §3: the domain accepts no mail


@dataclass(frozen=True)
class MailHost:
    """One host to try, with its MX preference (lower first)."""

    preference: int
    host: str  # without the trailing dot


def nameserver(entry: str, port: int = 53) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[IPv6]:PORT`` as an address and a port (``port`` if none).

    Raises ValueError for anything else: a resolver is named by its address, not a name
    that would itself need resolving.
    """
    text = entry.strip()
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: expected [IPv6]:PORT")
        number = rest[1:] if rest else str(port)
    elif _is_address(text):
        host, number = text, str(port)
    else:
        host, _, number = text.rpartition(":")
    if not _is_address(host) or not number.isdigit() or not 0 < int(number) < 65536:
        raise ValueError(f"{entry!r}: expected IP, IP:PORT or [IPv6]:PORT")
    return str(ipaddress.ip_address(host)), int(number)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def resolver(
    nameservers: Sequence[str] = (), port: int = 53, lifetime: float = 10.0
) -> dns.asyncresolver.Resolver:
    """The system resolver, or one asking only ``nameservers`` (see :func:`nameserver`;
    ``port`` for entries naming none).

    Naming servers is for the lab and the tests (a resolver on loopback serving test zones),
    and for sites that must use a given resolver (``gateway.nameservers``); otherwise the
    system's resolver, validating DNSSEC where the site does, is the one to trust.
    """
    if not nameservers:
        system = dns.asyncresolver.Resolver()
        system.lifetime = lifetime
        return system
    chosen = dns.asyncresolver.Resolver(configure=False)
    servers = [nameserver(entry, port) for entry in nameservers]
    chosen.nameservers = [dns.nameserver.Do53Nameserver(host, number) for host, number in servers]
    chosen.lifetime = lifetime
    return chosen


def order(
    records: Sequence[tuple[int, str]], shuffle: random.Random | None = None
) -> list[MailHost]:
    """Hosts by preference; hosts of equal preference in random order (RFC 5321 §5.1)."""
    rng = shuffle or random.Random()
    keyed = [(preference, rng.random(), host.rstrip(".").lower()) for preference, host in records]
    return [MailHost(preference, host) for preference, _, host in sorted(keyed)]


async def mail_hosts(domain: str, resolve: dns.asyncresolver.Resolver) -> list[MailHost]:
    """The hosts that take mail for ``domain``, best first.

    No MX record: the domain itself (implicit MX, RFC 5321 §5.1). A null MX (``0 .``, RFC
    7505) or a domain that does not exist: :class:`Rejected`. No answer in time or a server
    failure: :class:`TemporaryFailure`.
    """
    try:
        answer = await resolve.resolve(domain, dns.rdatatype.MX)
    except dns.resolver.NXDOMAIN as exc:
        raise Rejected(
            f"Le domaine {domain} n'existe pas.", code=NO_SUCH_DOMAIN, detail=f"{domain}: NXDOMAIN"
        ) from exc
    except dns.resolver.NoAnswer:
        return [MailHost(0, domain.rstrip(".").lower())]
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise TemporaryFailure(f"MX of {domain}: {type(exc).__name__}") from exc
    records = [(int(r.preference), r.exchange.to_text(omit_final_dot=True)) for r in answer]
    if any(r.exchange == dns.name.root for r in answer):
        raise Rejected(
            f"Le domaine {domain} n'accepte pas de courriel.",
            code=NULL_MX,
            detail=f"{domain}: null MX",
        )
    return order(records)


async def addresses(host: str, resolve: dns.asyncresolver.Resolver) -> list[str]:
    """The IPv4 then IPv6 addresses of an MX host, from the same resolver; may be empty."""
    found: list[str] = []
    for kind in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            answer = await resolve.resolve(host, kind)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise TemporaryFailure(f"address of {host}: {type(exc).__name__}") from exc
        found.extend(str(record.address) for record in answer)
    return found
