"""The loopback world of the demo and the end-to-end tests: who is who, and the bridge config."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.pki import TestPki
from mssbridge.lab.whitelist import provision_lab_whitelist
from mssbridge.provisioning import write_new_config

SERVER_NAME = "hospital.test"
BRIDGE_MAILBOX = "messagerie@chu-test.mssante.fr"
CORRESPONDENT = "dr.house@correspondant.mssante.fr"
MAIL_DOMAINS = ("chu-test.mssante.fr", "correspondant.mssante.fr")
CLIENT_NAMES = (BRIDGE_MAILBOX, CORRESPONDENT)
# The lab hospital's MSSanté identity for health documents: a made-up NIL and FINESS, and the
# test authority of INS numbers (only test patients exist in the lab).
LAB_DOCUMENT_SETTINGS = (
    "mssante.nil=MSSBRIDGE-LAB",
    "mssante.name=CH du Lab",
    "mssante.finess=2A0000001",
    "mssante.ins_root=1.2.250.1.213.1.4.10",
)


def write_bridge_config(
    path: Path,
    pki: TestPki,
    mail: MailLab,
    *,
    homeserver_url: str,
    as_token: str,
    hs_token: str,
    appservice_port: int,
    invite: Sequence[str] = (),
    extra: Sequence[str] = (),
    auth_method: str = "external",
    imap_security: str = "starttls",
    documents: bool = False,
) -> Path:
    """Write a bridge config for the lab with ``mssbridge init``'s own code; return its path.

    The lab's signed whitelist (its two mail domains) is imported into that bridge's store.
    ``documents`` sets the hospital's identity (:data:`LAB_DOCUMENT_SETTINGS`), so that a
    conversation with a patient context sends its CDA package; ``extra`` comes after it.
    """
    bridge_cert = pki.client(BRIDGE_MAILBOX)
    imap_port = mail.imap_port if imap_security == "starttls" else mail.imaps_port
    settings = [
        f"matrix.homeserver_url={homeserver_url}",
        f"matrix.server_name={SERVER_NAME}",
        f"matrix.as_token={as_token}",
        f"matrix.hs_token={hs_token}",
        f"matrix.listen_port={appservice_port}",
        f"tls.ca_file={pki.ca_bundle}",
        f"tls.cert_file={bridge_cert.chain}",
        f"tls.key_file={bridge_cert.key}",
        f"mailbox.address={BRIDGE_MAILBOX}",
        "mailbox.display_name=Messagerie CHU Test",
        f"mailbox.smtp.host={mail.host}",
        f"mailbox.smtp.port={mail.smtp_port}",
        f"mailbox.imap.host={mail.host}",
        f"mailbox.imap.port={imap_port}",
        f"mailbox.imap.security={imap_security}",
        "mailbox.imap.idle_timeout=60",
        f"mailbox.auth.method={auth_method}",
        f"mailbox.auth.username={BRIDGE_MAILBOX}",
        f"mailbox.auth.password={mail.password}",
        "retry.first_delay=0.5",
        "retry.max_delay=5",
        f"whitelist.ca_file={pki.ca_bundle}",
        "routing.default_invite=" + "[" + ", ".join(f'"{u}"' for u in invite) + "]",
        *(LAB_DOCUMENT_SETTINGS if documents else ()),
        *extra,
    ]
    write_new_config(path, settings)
    # The lab domains are not in the real list: the lab signs and imports its own.
    provision_lab_whitelist(path, pki, MAIL_DOMAINS)
    return path
