"""Gateway mode, assembled: TLS context, decisions and SMTP server, started by the daemon."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives import serialization

from mssbridge.config import Settings
from mssbridge.flows.gateway_intake import GatewayIntake
from mssbridge.flows.gateway_workers import GatewayWorkers, listen_entries
from mssbridge.mail.peer_counts import SharedPeerCounts, SharedPeerSessions
from mssbridge.mail.smtp_in import GatewayHandler, GatewayServer, ServerLimits
from mssbridge.security import certinfo
from mssbridge.security.gateway_tls import GatewayTls, build_server_context, gateway_tls_section
from mssbridge.security.peer_dn import certificate_dn, dn_listed
from mssbridge.store.repo import Store
from mssbridge.store.whitelist_repo import WhitelistRepo

log = logging.getLogger("mssbridge.gateway")


class GatewayService:
    """The inbound SMTP server of ``[gateway]``.

    Built before anything starts, so that a certificate or CRL problem stops the daemon at
    once; :meth:`start` opens the sockets once the store and the inbox worker exist.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        listen: Sequence[str] = (),
        worker: bool = False,
        peer_counts: SharedPeerCounts | None = None,
        row: int = 0,
    ) -> None:
        self.settings = settings
        self.tls = GatewayTls(settings)
        self.listen = tuple(listen) or settings.gateway.listen
        self.worker = worker  # one of the extra processes: SMTP only, no workers of its own
        # With several processes: the per-peer session counts they share, and this one's row
        # (the daemon's is 0; it makes them at start and hands them to its workers).
        self.peer_counts = peer_counts
        self.row = row
        self.server: GatewayServer | None = None
        self.intake: GatewayIntake | None = None
        self.workers: GatewayWorkers | None = None

    async def start(
        self,
        store: Store,
        on_stored: Callable[[], None],
        refused: Callable[[str], None] = lambda code: None,
    ) -> None:
        gateway = self.settings.gateway
        intake = GatewayIntake(self.settings, store, on_stored)
        handler = GatewayHandler(intake, ServerLimits.from_settings(self.settings), refused)
        shared = gateway.processes > 1
        if shared and not self.worker:
            self.peer_counts = SharedPeerCounts(gateway.processes)  # fresh: nothing open yet
        server = GatewayServer(
            handler,
            lambda: self.tls.context,
            gateway.hostname or gateway.domain,
            self.listen,
            reuse_port=shared,
            sessions=self._shared_sessions(),
        )
        await server.start()
        self.server = server
        self.intake = intake
        if shared and not self.worker:
            # Bound first here: the workers take the real ports when the config says 0.
            workers = GatewayWorkers(
                self.settings,
                listen_entries(server.addresses),
                on_stored,
                count=gateway.processes - 1,
                on_refused=refused,  # the workers' refusals count in the daemon's /metrics
                peer_counts=self.peer_counts,
            )
            try:
                await workers.start()
            except BaseException:
                await self.stop()
                raise
            self.workers = workers

    def _shared_sessions(self) -> SharedPeerSessions | None:
        """The per-peer cap counted over every process, when there are several."""
        if self.peer_counts is None:
            return None
        limit = self.settings.gateway.max_sessions_per_peer
        return SharedPeerSessions(limit, self.peer_counts, self.row)

    async def stop(self) -> None:
        # The workers first: under systemd they get SIGTERM together with the daemon, and one
        # that ends must not be taken for one that died.
        if self.workers is not None:
            await self.workers.stop()
            self.workers = None
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.intake is not None:
            await self.intake.close()
            self.intake = None

    def reload_tls(self) -> bool:
        """SIGHUP: new connections take the re-read certificate, key, anchors and CRLs."""
        if self.workers is not None:
            self.workers.reload_tls()
        return self.tls.reload()


async def gateway_status(settings: Settings, store: Store) -> str:
    """``mssbridge check``: the server certificate loads with its CRLs, and the whitelist lists
    the chat domain with that certificate's DN, which is what peers check before delivering.

    Raises ConfigError or ValueError naming what is wrong.
    """
    gateway = settings.gateway
    tls = gateway_tls_section(settings)
    build_server_context(tls)
    report = certinfo.inspect(tls)
    if report.errors or not report.chain.ok:
        raise ValueError("; ".join(report.errors) or f"{tls.cert_file}: chain broken")
    der = certinfo.load_certificates(tls.cert_file)[0].public_bytes(serialization.Encoding.DER)
    subject, text = certificate_dn(der)
    listed = await WhitelistRepo(store).operator_dns(gateway.domain)
    if not listed:
        raise ValueError(
            f"{gateway.domain} is not in the whitelist in force: operators will not deliver to it"
        )
    if not dn_listed(subject, listed):
        raise ValueError(
            f"the whitelist lists {gateway.domain} with other certificate DNs than {text}: "
            "operators will refuse this server"
        )
    days = report.certificate.days_left()
    return f"{gateway.domain} on {', '.join(gateway.listen)}: {text} listed, {days} days left"
