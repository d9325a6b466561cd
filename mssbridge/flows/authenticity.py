"""Inbound DKIM: verify each mail once, record the verdict, apply ``dkim.verify_policy``."""

from __future__ import annotations

import logging

from mssbridge.errors import TemporaryFailure
from mssbridge.flows.context import BridgeContext
from mssbridge.mail.dkim import DkimStatus
from mssbridge.store.tables import Inbox, RowState

log = logging.getLogger("mssbridge.inbound")

REJECT_ERROR = "5.7.20 DKIM signature not verified"
_FAILED = (f"dkim={DkimStatus.FAIL}", f"dkim={DkimStatus.PERMERROR}")


async def passes_dkim_policy(ctx: BridgeContext, row: Inbox, raw: bytes) -> bool:
    """Record the mail's DKIM verdict on its row; False when the policy rejected the mail.

    A rejected mail stays in the store and the mailbox, is not relayed, and the operators are
    told. A key lookup that failed for now is retried under the ``reject`` policy only.
    """
    if row.auth_results is None:
        result = await ctx.dkim.verifier.verify_async(raw)
        if result.status == DkimStatus.TEMPERROR and ctx.dkim.reject_failures:
            raise TemporaryFailure("DKIM key lookup failed")
        await ctx.store.set_auth_results(row.id, result.header)
        row.auth_results = result.header
    if not ctx.dkim.reject_failures or not row.auth_results.startswith(_FAILED):
        return True
    log.warning("inbox row %s rejected: %s", row.id, row.auth_results.split(" ", 1)[0])
    await ctx.store.finish(Inbox, row.id, RowState.REJECTED, REJECT_ERROR)
    await ctx.admin_notice(
        f"Courriel entrant n° {row.id} non relayé : signature DKIM invalide "
        f"({row.auth_results}). Conservé, voir « mssbridge queue show inbox {row.id} ».",
        f"mssb-dkim-{row.id}",
    )
    return False
