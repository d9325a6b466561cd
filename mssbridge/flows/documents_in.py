"""Received health documents: an ``IHE_XDM.ZIP`` attached to a mail becomes a summary and PDFs.

Everything is decided before the inbound flow's first send: the package is read (off the event
loop) and its PDFs uploaded, then the flow posts the prepared events with transaction ids that
follow the mail's own, so a retry posts nothing twice. A package that cannot be read becomes a
notice naming what is wrong; the mail itself is relayed anyway, the archive as a file. The
summary names the patient: it goes to the room only, never to a log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from mssbridge.cda.summary import PackageSummary, refusal_text, summarize
from mssbridge.cda.xdm import ZIP_NAME, XdmLimits, XdmRefused, read_xdm
from mssbridge.convert.mail_to_chat import attachment_content
from mssbridge.flows.context import BridgeContext
from mssbridge.model import Attachment, InboundMail

log = logging.getLogger("mssbridge.documents_in")

PDF_TYPE = "application/pdf"


def read_package(data: bytes, limits: XdmLimits | None = None) -> PackageSummary | XdmRefused:
    """CPU-bound: parse a received package (hostile until proven otherwise) and summarise it."""
    try:
        return summarize(read_xdm(data, limits))
    except XdmRefused as refused:
        return refused


def packages_of(mail: InboundMail) -> list[Attachment]:
    """The ``IHE_XDM.ZIP`` attachments of a mail written by a person (not of reports)."""
    if mail.auto_submitted:  # a receipt quoting our own package is not a new document
        return []
    return [a for a in mail.attachments if a.filename.upper() == ZIP_NAME]


async def prepare_documents(
    ctx: BridgeContext, ghost: str, mail: InboundMail, row_id: int | None
) -> list[dict[str, Any]]:
    """The events to post, in order, for the mail's packages; PDFs are uploaded already."""
    contents: list[dict[str, Any]] = []
    attached = {hashlib.sha256(a.data).digest() for a in mail.attachments}
    for package in packages_of(mail):
        result = await asyncio.to_thread(read_package, package.data)
        if isinstance(result, XdmRefused):
            log.warning("inbox row %s: IHE_XDM.ZIP refused (%s)", row_id, result.kind)
            contents.append({"msgtype": "m.notice", "body": refusal_text(result)})
            continue
        contents.append({"msgtype": "m.text", "body": result.text, "m.mentions": {}})
        fresh = [f for f in result.files if hashlib.sha256(f.data).digest() not in attached]
        for file in fresh:
            attachment = Attachment(file.filename, PDF_TYPE, file.data)
            mxc = await ctx.rooms.upload(ghost, file.data, PDF_TYPE, file.filename)
            contents.append(attachment_content(attachment, mxc))
        log.info(
            "inbox row %s: IHE_XDM.ZIP read (%d PDF(s) to post, %d already attached)",
            row_id,
            len(fresh),
            len(result.files) - len(fresh),
        )
    return contents
