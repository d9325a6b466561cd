"""Gateway mode, outbound: deliver to a domain's MX hosts over mutual TLS, DN checked.

Each MX host is tried in order until one takes the transaction (RFC 5321 §5.1). A host is
skipped when it cannot be reached, offers no STARTTLS (no clear-text fallback), fails the TLS
handshake (its certificate must chain to the IGC-Santé anchors of the context; ours must be
accepted), or presents a certificate whose subject is not a DN the whitelist lists for the
recipient domain: MSSanté peers are named by the whitelist, not by their host names. When
no host took it: :class:`TemporaryFailure` naming why each was skipped. Once a host answers
the envelope, its replies decide, as in :mod:`mssbridge.mail.smtp_out`.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections.abc import Sequence

import aiosmtplib
import dns.asyncresolver

from mssbridge.errors import TemporaryFailure
from mssbridge.mail import mx
from mssbridge.mail.mx import MailHost
from mssbridge.mail.smtp_out import (
    Submission,
    _all_refused,
    _envelope_failure,
    _quit,
    _refusal,
    _send,
)
from mssbridge.mail.smtp_sessions import SessionCache
from mssbridge.security.peer_dn import Dn, certificate_dn, dn_listed
from mssbridge.security.tls import is_certificate_refusal, refusal_reason

log = logging.getLogger("mssbridge.mail.smtp_direct")

SMTP_PORT = 25


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class InterruptedDelivery(TemporaryFailure):
    """The session broke during a transaction: the server may have taken the mail."""


class HostSkipped(Exception):
    """This MX host cannot take the mail now; the next one is tried."""


def _server_subject(smtp: aiosmtplib.SMTP) -> tuple[Dn, str]:
    ssl_object = smtp.get_transport_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise HostSkipped("no server certificate")
    return certificate_dn(der)


async def _open(
    host: MailHost,
    address: str,
    port: int,
    tls_context: ssl.SSLContext,
    listed_dns: Sequence[str] | None,
    timeout: float,
    helo: str | None,
) -> aiosmtplib.SMTP:
    """Connect to ``address``, STARTTLS (required) naming ``host``, check the DN, EHLO again."""
    smtp = aiosmtplib.SMTP(
        hostname=address,
        port=port,
        timeout=timeout,
        start_tls=False,  # done below, so that the TLS name is the MX host, not its address
        tls_context=tls_context,
        local_hostname=helo,
    )
    try:
        await smtp.connect()
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
        if not smtp.supports_extension("starttls"):
            raise HostSkipped("no STARTTLS offered")  # never in clear text
        await smtp.starttls(server_hostname=host.host, tls_context=tls_context)
        subject, text = _server_subject(smtp)
        if listed_dns is not None and not dn_listed(subject, listed_dns):
            raise HostSkipped(f"certificate {text} not listed for the domain")
        if smtp.is_ehlo_or_helo_needed:
            await smtp.ehlo()
    except HostSkipped:
        smtp.close()
        raise
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        smtp.close()
        cause = exc.__cause__ or exc.__context__
        for candidate in (exc, cause):
            if candidate is not None and is_certificate_refusal(candidate):
                raise HostSkipped(f"TLS refused: {refusal_reason(candidate)}") from exc
        raise HostSkipped(f"{type(exc).__name__}: {exc}") from exc
    return smtp


async def _connect_any(
    host: MailHost,
    resolve: dns.asyncresolver.Resolver,
    port: int,
    tls_context: ssl.SSLContext,
    listed_dns: Sequence[str] | None,
    timeout: float,
    helo: str | None,
) -> aiosmtplib.SMTP:
    """The first address of ``host`` that takes a secured, checked session."""
    found = [host.host] if _is_address(host.host) else await mx.addresses(host.host, resolve)
    if not found:
        raise HostSkipped("no address")
    reasons = []
    for address in found:
        try:
            return await _open(host, address, port, tls_context, listed_dns, timeout, helo)
        except HostSkipped as exc:
            reasons.append(f"{address}: {exc}")
    raise HostSkipped("; ".join(reasons))


async def deliver(
    domain: str,
    hosts: Sequence[MailHost],
    resolve: dns.asyncresolver.Resolver,
    tls_context: ssl.SSLContext,
    listed_dns: Sequence[str] | None,
    *,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    port: int = SMTP_PORT,
    timeout: float = 60.0,
    helo: str | None = None,
    sessions: SessionCache | None = None,
) -> Submission:
    """Deliver ``message`` to ``recipients`` (all in ``domain``) through its MX ``hosts``,
    whose addresses ``resolve`` gives (the resolver of :func:`mx.mail_hosts`).

    ``listed_dns`` None (a relay of the establishment, not an operator): no DN check, the
    context checks the host name instead. A host given as an IP address is not resolved.
    ``port`` other than 25 is for a relay, the lab and the tests. With ``sessions``, an idle
    session to the domain is used first, and the session is kept after a completed
    transaction. The outcome is a :class:`Submission` (some recipients may have been
    refused), or :class:`Rejected` / :class:`TemporaryFailure`.
    """
    if not recipients:
        raise ValueError("deliver needs at least one recipient")
    cached = await sessions.take(domain) if sessions is not None else None
    if cached is not None:
        smtp, host_name = cached
        return await _transact(domain, smtp, host_name, port, sender, recipients, message, sessions)
    skipped: list[str] = []
    for host in hosts:
        try:
            smtp = await _connect_any(host, resolve, port, tls_context, listed_dns, timeout, helo)
        except (HostSkipped, TemporaryFailure) as exc:
            log.warning("MX %s of %s skipped: %s", host.host, domain, exc)
            skipped.append(f"{host.host}: {exc}")
            continue
        return await _transact(domain, smtp, host.host, port, sender, recipients, message, sessions)
    raise TemporaryFailure(f"{domain}: no MX host took the mail ({'; '.join(skipped) or 'none'})")


async def _transact(
    domain: str,
    smtp: aiosmtplib.SMTP,
    host: str,
    port: int,
    sender: str,
    recipients: Sequence[str],
    message: bytes,
    sessions: SessionCache | None,
) -> Submission:
    """One transaction on a secured session; its replies decide. The session is then kept
    (``sessions``) or closed."""
    peer = f"MX {host}:{port}"
    try:
        errors, reply = await _send(smtp, sender, recipients, message, False)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        await _quit(smtp)
        raise _all_refused(
            [_refusal(r.recipient, r.code, r.message) for r in exc.recipients]
        ) from exc
    except aiosmtplib.SMTPResponseException as exc:
        await _quit(smtp)
        raise _envelope_failure(exc, peer) from exc
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        await _quit(smtp)
        raise InterruptedDelivery(f"{peer}: {type(exc).__name__}: {exc}") from exc
    except BaseException:
        smtp.close()  # cancelled: no goodbye
        raise
    if sessions is not None:
        sessions.give(domain, smtp, host)
    else:
        await _quit(smtp)
    refused = tuple(_refusal(a, r.code, r.message) for a, r in errors.items())
    accepted = tuple(r for r in recipients if r not in errors)
    log.info(
        "delivered to %s via %s: %d accepted, %d refused", domain, host, len(accepted), len(refused)
    )
    return Submission(reply=reply, accepted=accepted, refused=refused)
