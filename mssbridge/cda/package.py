"""One call from a DocumentRequest to everything a document-bearing mail attaches.

CPU-bound (PDF layout, XML, deflate): callers in the daemon run it in a worker pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from mssbridge.cda.document import build_cda
from mssbridge.cda.mail_parts import request_mail_parts
from mssbridge.cda.model import DocumentRequest
from mssbridge.cda.transcript import TranscriptFonts, render_transcript
from mssbridge.cda.xdm import XdmSubmission, build_xdm


@dataclass(frozen=True)
class DocumentPackage:
    """The PDF, its CDA, the ``IHE_XDM.ZIP`` and the mail parts that go with them."""

    pdf: bytes
    cda: bytes
    xdm_zip: bytes
    subject: str
    pdf_filename: str
    headers: tuple[tuple[str, str], ...]


def build_package(
    request: DocumentRequest,
    submission: XdmSubmission,
    fonts: TranscriptFonts | None,
    nil: str,
) -> DocumentPackage:
    pdf = render_transcript(request, fonts)
    cda = build_cda(request, pdf)
    xdm_zip = build_xdm([cda], submission)
    subject, filename, headers = request_mail_parts(request, nil)
    return DocumentPackage(pdf, cda, xdm_zip, subject, filename, headers)
