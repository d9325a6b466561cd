"""Gateway mode sending users' mail itself: signer, client TLS, delivery flow and worker."""

from __future__ import annotations

import asyncio
import functools

from mssbridge.config import GatewaySection, Settings
from mssbridge.flows.context import BridgeContext
from mssbridge.flows.delivery import DeliveryFlow, Route, notify_refusal
from mssbridge.flows.delivery_worker import DeliveryWorker
from mssbridge.flows.gateway_out import GatewayOutbound, chat_domain_signer
from mssbridge.mail import mx
from mssbridge.mail.smtp_sessions import SessionCache
from mssbridge.metrics import BridgeMetrics
from mssbridge.security.gateway_tls import gateway_tls_section
from mssbridge.security.tls import TlsContexts


class GatewaySending:
    """Built before anything starts, so that a DKIM key or certificate problem stops the start.

    The client certificate is the gateway's (the whitelist lists the chat domain with its
    DN, which is what receiving operators check). To MX hosts the DN decides, not the host
    name, which MSSanté certificates do not carry; a relay is checked by its name when
    ``tls.check_hostname`` is set.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signer = chat_domain_signer(settings)
        tls = gateway_tls_section(settings)
        if settings.gateway.outbound == "mx":
            tls = tls.model_copy(update={"check_hostname": False})
        self.tls = TlsContexts(tls)

    def attach(
        self,
        ctx: BridgeContext,
        route: Route | None = None,
        metrics: BridgeMetrics | None = None,
    ) -> DeliveryWorker:
        """Make ``ctx``'s outbound flow queue deliveries, and return the worker sending them."""
        gateway = self.settings.gateway
        wakeup = asyncio.Event()
        ctx.gateway_out = GatewayOutbound(self.settings, ctx.store, self.signer, wakeup.set)
        route = route or self.route()
        sessions = SessionCache(per_domain=gateway.max_per_domain)
        flow = DeliveryFlow(ctx, route, sessions)
        return DeliveryWorker(
            ctx.store,
            flow.handle,
            functools.partial(notify_refusal, ctx),
            self.settings.retry,
            per_domain=gateway.max_per_domain,
            lease=self.settings.bridge.lease_seconds,
            wakeup=wakeup,
            closing=sessions.close,
            metrics=metrics,
        )

    def route(self) -> Route:
        """Where deliveries go, as configured: the relay, or MX hosts by the set resolver."""
        gateway = self.settings.gateway
        if gateway.outbound == "relay":
            relay, resolver = gateway.relay, None
        else:
            relay, resolver = "", mx.resolver(gateway.nameservers) if gateway.nameservers else None
        return Route(
            lambda: self.tls.client,
            relay=relay,
            resolver=resolver,
            port=gateway.mx_port,
            timeout=gateway.delivery_timeout,
            helo=gateway.hostname or gateway.domain,
        )

    def reload_tls(self) -> bool:
        """SIGHUP: the next deliveries present and trust the re-read files."""
        return self.tls.reload()


def sending_status(settings: Settings) -> str:
    """``mssbridge check``: the chat domain's DKIM key and the client certificate load.

    Raises ConfigError naming what is wrong.
    """
    sending = GatewaySending(settings)
    gateway = settings.gateway
    route = f"relay {gateway.relay}" if gateway.outbound == "relay" else _mx_route(gateway)
    signer = sending.signer
    return (
        f"users' mail from {gateway.domain} through {route}, DKIM "
        f"{signer.selector}._domainkey.{signer.domain}, at most {gateway.max_per_domain} "
        "deliveries per domain"
    )


def _mx_route(gateway: GatewaySection) -> str:
    """How MX hosts are found, for ``mssbridge check``."""
    asked = ", ".join(gateway.nameservers) if gateway.nameservers else "the system resolver"
    port = "" if gateway.mx_port == 25 else f", port {gateway.mx_port}"
    return f"MX of each domain (DNS: {asked}{port})"
