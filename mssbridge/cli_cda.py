"""``mssbridge cda example``: write a sample document-bearing mail, its IHE_XDM.ZIP and PDF."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

cda_app = typer.Typer(help="Health documents (CDA R2, IHE XDM).", no_args_is_help=True)


@cda_app.command("example")
def example(
    out: Annotated[Path, typer.Option(help="Directory for the .eml, IHE_XDM.ZIP and PDF.")],
    messages: Annotated[int, typer.Option(help="Messages in the sample thread.")] = 5,
) -> None:
    """Build a complete sample for a made-up test patient (INS test OID, fictional ids)."""
    from mssbridge.cda.package import build_package
    from mssbridge.cda.sample import SAMPLE_NIL, sample_request, sample_submission
    from mssbridge.cda.transcript import find_fonts
    from mssbridge.cda.xdm import ZIP_NAME
    from mssbridge.convert.chat_to_mail import build_message
    from mssbridge.model import Attachment, MailThread, OutboundMail

    request = sample_request(max(1, messages))
    fonts = find_fonts()
    if fonts is None:
        typer.secho(
            "DejaVu fonts not found: Latin-1 PDF, not PDF/A", err=True, fg=typer.colors.YELLOW
        )
    package = build_package(request, sample_submission(request), fonts, SAMPLE_NIL)
    mail = OutboundMail(
        message_id="<exemple-cda-0001@hopital.exemple.mssante.fr>",
        from_address="passerelle@hopital.exemple.mssante.fr",
        from_name="Centre hospitalier d'Exemple",
        to=("destinataire@exemple.mssante.fr",),
        date=request.effective_time,
        thread=MailThread(subject=package.subject),
        text=(
            "Bonjour,\n\nVeuillez trouver ci-joint la transcription des échanges "
            "à propos de la patiente (document CDA dans IHE_XDM.ZIP, et sa version PDF).\n"
        ),
        attachments=(
            Attachment(ZIP_NAME, "application/zip", package.xdm_zip),
            Attachment(package.pdf_filename, "application/pdf", package.pdf),
        ),
        extra_headers=package.headers,
    )
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "exemple.eml": build_message(mail).as_bytes(),
        ZIP_NAME: package.xdm_zip,
        package.pdf_filename: package.pdf,
        "DOC0001.XML": package.cda,
    }
    for name, data in files.items():
        (out / name).write_bytes(data)
        typer.echo(f"{out / name} ({len(data)} bytes)")
