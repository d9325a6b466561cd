"""A correspondent's plain mail client (stdlib smtplib/imaplib), for demos and tests."""

from __future__ import annotations

import imaplib
import smtplib
import ssl
from collections.abc import Sequence
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import make_msgid

from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import CertFiles


class Correspondent:
    """Someone who only has an MSSanté mailbox: sends with SMTP, reads with IMAP."""

    def __init__(self, address: str, lab: MailLab, cert: CertFiles, name: str = "") -> None:
        self.address = address
        self.name = name
        self.lab = lab
        self.context = ssl.create_default_context(cafile=str(lab.pki.ca_bundle))
        self.context.load_cert_chain(str(cert.chain), str(cert.key))

    def send(
        self,
        to: str,
        subject: str,
        text: str,
        *,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
        attachments: Sequence[tuple[str, str, bytes]] = (),
        message_id: str | None = None,
    ) -> str:
        """Submit a mail over STARTTLS with the client certificate; return its Message-ID."""
        message = EmailMessage()
        message["From"] = f"{self.name} <{self.address}>" if self.name else self.address
        message["To"] = to
        message["Subject"] = subject
        message["Message-ID"] = message_id or make_msgid(domain=self.address.split("@")[1])
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = " ".join([*references, in_reply_to])
        message.set_content(text)
        for filename, mimetype, data in attachments:
            maintype, _, subtype = mimetype.partition("/")
            message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        with smtplib.SMTP(self.lab.host, self.lab.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=self.context)
            smtp.send_message(message)
        return str(message["Message-ID"])

    def send_raw(self, to: str, raw: bytes) -> None:
        """Submit bytes as they are, even a malformed message (for tests of bad input)."""
        with smtplib.SMTP(self.lab.host, self.lab.smtp_port, timeout=30) as smtp:
            smtp.starttls(context=self.context)
            smtp.sendmail(self.address, [to], raw)

    def inbox(self) -> list[EmailMessage]:
        """Every mail in the mailbox, oldest first (read over IMAPS, password login)."""
        with imaplib.IMAP4_SSL(
            self.lab.host, self.lab.imaps_port, ssl_context=self.context
        ) as imap:
            imap.login(self.address, self.lab.password)
            imap.select("INBOX", readonly=True)
            _, data = imap.uid("SEARCH", "ALL")
            uids = data[0].split() if data and data[0] else []
            messages: list[EmailMessage] = []
            for uid in uids:
                _, parts = imap.uid("FETCH", uid, "(BODY.PEEK[])")
                raw = next(p[1] for p in parts if isinstance(p, tuple))
                parsed = message_from_bytes(raw, policy=default_policy)
                assert isinstance(parsed, EmailMessage)
                messages.append(parsed)
            return messages
