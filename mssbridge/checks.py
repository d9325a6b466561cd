"""``mssbridge check``: one verdict per dependency, from the key file to both mail servers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp

from mssbridge.config import Settings, TlsSection


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


async def _guard(name: str, probe: Callable[[], Awaitable[str]]) -> CheckResult:
    started = time.monotonic()
    try:
        detail = await probe()
    except Exception as exc:
        return CheckResult(name, False, f"{type(exc).__name__}: {exc}"[:300])
    return CheckResult(name, True, f"{detail} ({(time.monotonic() - started) * 1000:.0f} ms)")


def certificate_verdict(tls: TlsSection, now: datetime) -> str:
    """Our certificate, days left, chain status and CRLs; raise ValueError when expired."""
    from mssbridge.security import certinfo

    report = certinfo.inspect(tls, now)
    cert = report.certificate
    chain = "chains to tls.ca_file" if report.chain.ok else "chain BROKEN"
    crls = f", {len(report.crls)} CRL(s), revocation check {report.crl_mode}" if report.crls else ""
    summary = (
        f"{cert.subject} issued by {cert.issuer}, valid until {cert.not_after:%Y-%m-%d} "
        f"({cert.days_left(now)} days left), {chain}{crls}"
    )
    if report.errors:
        raise ValueError(f"{'; '.join(report.errors)}: {summary}")
    if report.warnings:
        return f"WARNING {'; '.join(report.warnings)}: {summary}"
    return summary


async def run_checks(settings: Settings) -> list[CheckResult]:
    from mssbridge.daemon import open_store
    from mssbridge.mail import imap, smtp_out
    from mssbridge.security.atrest import load_key
    from mssbridge.security.tls import client_context

    async def key() -> str:
        load_key(settings.bridge.key_file)
        return f"{settings.bridge.key_file} readable by its owner only"

    async def certificate() -> str:
        client_context(settings.tls)
        return certificate_verdict(settings.tls, datetime.now(tz=UTC))

    async def database() -> str:
        store = await open_store(settings)
        await store.engine.dispose()
        return f"{store.engine.dialect.name} schema up to date, at-rest key matches"

    async def whitelist() -> str:
        from mssbridge.flows.whitelist_gate import whitelist_status

        store = await open_store(settings)
        try:
            return await whitelist_status(store, settings, time.time())
        finally:
            await store.engine.dispose()

    async def homeserver() -> str:
        matrix = settings.matrix
        headers = {"Authorization": f"Bearer {matrix.as_token}"}
        timeout = aiohttp.ClientTimeout(total=15)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(f"{matrix.homeserver_url}/_matrix/client/versions") as resp:
                resp.raise_for_status()
            whoami_url = f"{matrix.homeserver_url}/_matrix/client/v3/account/whoami"
            async with session.get(whoami_url, headers=headers) as resp:
                if resp.status != 200:
                    raise ValueError(
                        f"as_token refused ({resp.status}): is the registration installed?"
                    )
                user = (await resp.json()).get("user_id")
        return f"{matrix.homeserver_url} reached, appservice token accepted as {user}"

    tls_ready = True
    try:
        context = client_context(settings.tls)
    except Exception:
        tls_ready = False

    async def smtp() -> str:
        if not tls_ready:
            raise ValueError("no TLS context (see the certificate check)")
        return await smtp_out.probe(settings.mailbox, context, settings.mailbox_password())

    async def imap_server() -> str:
        if not tls_ready:
            raise ValueError("no TLS context (see the certificate check)")
        return await imap.probe(settings.mailbox, context, settings.mailbox_password())

    async def gateway() -> str:
        from mssbridge.flows.gateway import gateway_status

        store = await open_store(settings)
        try:
            return await gateway_status(settings, store)
        finally:
            await store.engine.dispose()

    async def gateway_outbound() -> str:
        from mssbridge.flows.gateway_sending import sending_status

        return sending_status(settings)

    return [
        await _guard("at-rest key", key),
        await _guard("certificates", certificate),
        await _guard("database", database),
        await _guard("whitelist", whitelist),
        await _guard("homeserver", homeserver),
        await _guard("smtp submission", smtp),
        await _guard("imap", imap_server),
        *([await _guard("gateway", gateway)] if settings.gateway.enabled else []),
        *(
            [await _guard("gateway outbound", gateway_outbound)]
            if settings.gateway.enabled and settings.gateway.outbound != "mailbox"
            else []
        ),
    ]
