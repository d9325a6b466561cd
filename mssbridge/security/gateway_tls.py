"""The server TLS context of gateway mode, rebuilt from the files on SIGHUP."""

from __future__ import annotations

import logging
import ssl

from mssbridge.config import Settings, TlsSection
from mssbridge.errors import ConfigError
from mssbridge.security.tls import server_context

log = logging.getLogger("mssbridge.tls")


def gateway_tls_section(settings: Settings) -> TlsSection:
    """``[tls]`` with the gateway's own certificate and key when ``[gateway]`` names them."""
    gateway = settings.gateway
    if gateway.cert_file is None or gateway.key_file is None:
        return settings.tls
    return settings.tls.model_copy(
        update={"cert_file": gateway.cert_file, "key_file": gateway.key_file}
    )


def build_server_context(tls: TlsSection) -> ssl.SSLContext:
    """TLS 1.2+, IGC-Santé anchors only, CRLs checked; a peer certificate is asked for.

    A presented certificate is verified during the handshake (chain, dates, CRL) and a bad
    one fails it; a peer without any completes it, so that MAIL can answer why it is
    refused (530 5.7.0) instead of a bare TLS alert.
    """
    if not tls.crl_files:
        raise ConfigError(
            "gateway.enabled needs tls.crl_files: peers' certificates must be checked "
            "against the IGC-Santé CRLs"
        )
    context = server_context(tls, require_client_cert=False)
    # No session tickets: a resumed session skips the certificate check, and a ticket
    # would outlive a SIGHUP that loads a CRL revoking the peer.
    context.options |= ssl.OP_NO_TICKET
    return context


class GatewayTls:
    """The server context in force; :meth:`reload` swaps it only when the new files load."""

    def __init__(self, settings: Settings) -> None:
        self._tls = gateway_tls_section(settings)
        self._context = build_server_context(self._tls)

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def reload(self) -> bool:
        try:
            context = build_server_context(self._tls)
        except (ConfigError, OSError) as exc:
            log.error("gateway TLS reload refused, the previous context stays: %s", exc)
            return False
        self._context = context
        log.info("gateway TLS reloaded")
        return True
