"""A real Postfix playing another MSSanté operator that delivers to the bridge's gateway."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import smtplib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from types import TracebackType

from mssbridge.lab.mailserver import (
    POSTFIX_SERVICES,
    START_TIMEOUT,
    STOP_GRACE,
    MailLabError,
    _alive,
    _allow_traversal,
    _port_open,
    _read_pid,
    _run_with_tty,
    _tail,
    _terminate,
    free_port,
)
from mssbridge.lab.pki import CertFiles, TestPki

# Mail from this local part leaves without a client certificate (a second smtp transport).
NO_CERTIFICATE_LOCALPART = "sans-certificat"
DELIVERY_TIMEOUT = 20.0


def message_id(subject: str) -> str:
    """The Message-ID :meth:`OperatorMta.send` gives a mail of that subject."""
    return f"<{subject.replace(' ', '.')}@operateur-pair.test>"


@dataclass(frozen=True)
class Delivery:
    """What Postfix logged about one delivery attempt: status and the server's reply."""

    queue_id: str
    status: str  # sent, bounced, deferred
    detail: str


class OperatorMta:
    """Postfix accepting mail on ``port`` (plain SMTP, loopback clients only) and delivering
    everything to ``gateway_host:gateway_port`` over STARTTLS, presenting ``client``.

    Mail whose sender's local part is ``sans-certificat`` goes through a second transport
    that presents no certificate. Bounces to the senders' domains (``sender_domains``) are
    discarded, so a refused test mail ends in the log and nowhere else.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        directory: Path,
        pki: TestPki,
        client: CertFiles,
        gateway_port: int,
        sender_domains: Sequence[str],
        gateway_host: str = "127.0.0.1",
    ) -> None:
        self.directory = directory
        self.pki = pki
        self.client = client
        self.gateway = (gateway_host, gateway_port)
        self.sender_domains = tuple(sender_domains)
        self.port = free_port()

    @property
    def log(self) -> Path:
        return self.directory / "maillog"

    def start(self) -> None:
        if os.geteuid() != 0 or shutil.which("postfix") is None:
            raise MailLabError("the operator MTA needs root and Postfix installed")
        etc = self.directory / "etc"
        for sub in ("etc", "spool", "data"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        _allow_traversal(self.directory.resolve())
        user = pwd.getpwnam("postfix")
        os.chown(self.directory / "data", user.pw_uid, user.pw_gid)
        (etc / "main.cf").write_text(self._main_cf())
        (etc / "master.cf").write_text(_MASTER_CF.format(port=self.port))
        code, output = _run_with_tty(["postfix", "-c", str(etc), "start"])
        if code != 0:
            raise MailLabError(f"postfix did not start ({code}): {output}\n{_tail(self.log)}")
        deadline = time.monotonic() + START_TIMEOUT
        while not _port_open(self.host, self.port):
            if time.monotonic() > deadline:
                self.stop()
                raise MailLabError(f"operator MTA port did not open\n{_tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        pid = _read_pid(self.directory / "spool" / "pid" / "master.pid")
        if pid is not None and _alive(pid):
            _terminate([pid], STOP_GRACE)

    def __enter__(self) -> OperatorMta:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _main_cf(self) -> str:
        d = self.directory
        host, port = self.gateway
        nexthop = f"[{host}]:{port}"
        no_cert = ", ".join(
            f"{{{NO_CERTIFICATE_LOCALPART}@{domain} = nocert:{nexthop}}}"
            for domain in self.sender_domains
        )
        return f"""\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = smtp.operateur-pair.test
mydestination =
relay_domains =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_relay_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = {" ".join(self.sender_domains)}
virtual_transport = discard:
default_transport = smtp:{nexthop}
sender_dependent_default_transport_maps = inline:{{ {no_cert} }}
smtp_connection_cache_on_demand = no
smtp_tls_security_level = encrypt
smtp_tls_mandatory_protocols = >=TLSv1.2
smtp_tls_CAfile = {self.pki.ca_bundle}
smtp_tls_chain_files = {self.client.key} {self.client.chain}
smtp_tls_loglevel = 1
maximal_backoff_time = 3600s
biff = no
"""

    def send(
        self,
        sender: str,
        recipients: Sequence[str],
        subject: str,
        body: str,
        in_reply_to: str | None = None,
    ) -> str:
        """Hand a mail to this Postfix; return its queue id. Its Message-ID is
        :func:`message_id` of the subject."""
        message = EmailMessage()
        message["From"] = sender
        message["To"] = ", ".join(recipients)
        message["Subject"] = subject
        message["Message-ID"] = message_id(subject)
        if in_reply_to:
            message["In-Reply-To"] = in_reply_to
            message["References"] = in_reply_to
        message.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=10) as smtp:
            smtp.ehlo("client.test")
            code, reply = smtp.mail(sender)
            if code != 250:
                raise MailLabError(f"operator MTA refused MAIL: {code} {reply!r}")
            for recipient in recipients:
                code, reply = smtp.rcpt(recipient)
                if code != 250:
                    raise MailLabError(f"operator MTA refused RCPT: {code} {reply!r}")
            code, reply = smtp.data(message.as_bytes())
        found = re.search(rb"queued as ([0-9A-Za-z]+)", reply)
        if code != 250 or found is None:
            raise MailLabError(f"operator MTA did not queue the mail: {code} {reply!r}")
        return found.group(1).decode()

    def wait_delivery(self, queue_id: str, timeout: float = DELIVERY_TIMEOUT) -> Delivery:
        """The first delivery attempt Postfix logged for ``queue_id``."""
        pattern = re.compile(rf"{queue_id}: to=<[^>]*>,.* status=(sent|bounced|deferred) \((.*)\)$")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in (
                self.log.read_text(errors="replace").splitlines() if self.log.exists() else []
            ):
                found = pattern.search(line)
                if found:
                    return Delivery(queue_id, found.group(1), found.group(2))
            time.sleep(0.1)
        raise MailLabError(f"no delivery of {queue_id} logged\n{_tail(self.log)}")


_MASTER_CF = (
    "127.0.0.1:{port} inet n - n - - smtpd\n"
    + POSTFIX_SERVICES
    + "nocert    unix  -       -       n       -       -       smtp -o smtp_tls_chain_files=\n"
)
