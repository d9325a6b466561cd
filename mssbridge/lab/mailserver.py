"""A real Postfix + Dovecot pair on 127.0.0.1, configured like an MSSanté operator, for tests."""

from __future__ import annotations

import contextlib
import os
import pty
import pwd
import select
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from mssbridge.lab.pki import TestPki

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
STOP_GRACE = 0.5
MAIL_USER = "nobody"  # owns the maildirs; the lab never creates system users
# Recipients with a scripted answer in every lab domain, to exercise error mapping.
TEMPFAIL_LOCALPART = "indisponible"
TEMPFAIL_REPLY = "450 4.2.1 Mailbox busy, try again later"
UNKNOWN_LOCALPART = "inconnu"
UNKNOWN_REPLY = "550 5.1.1 Recipient address rejected: unknown user"
# Accepted at RCPT, refused at delivery: Postfix returns a failure DSN to the sender.
BOUNCE_LOCALPART = "introuvable"
BOUNCE_REASON = "5.1.1 Mailbox does not exist"


class MailLabError(RuntimeError):
    """The lab could not start; the message carries the tail of the server logs."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:  # all held open at once, so the ports differ
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie left unreaped (no init in a container) is dead."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def _own_group(pid: int) -> int | None:
    """The process group led by ``pid`` (daemons call setsid), never the caller's own."""
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    return group if group == pid and group != os.getpgrp() else None


def _terminate(pids: Sequence[int], grace: float) -> None:
    """SIGTERM the master daemons, then after ``grace`` SIGKILL their whole process groups.

    A graceful Dovecot stop takes about 3 s and Postfix about 1.5 s; a lab holds nothing
    worth that wait, so the grace period is short.
    """
    groups = {pid: _own_group(pid) for pid in pids}
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    _wait_gone(pids, grace)
    for pid, group in groups.items():
        with contextlib.suppress(ProcessLookupError):
            if group is not None:
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    _wait_gone(pids, STOP_TIMEOUT)


def _wait_gone(pids: Sequence[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.02)


def _run_with_tty(argv: Sequence[str]) -> tuple[int, str]:
    """Run a command with stderr on a pseudo-tty: Postfix only prints errors to a tty."""
    main_fd, child_fd = pty.openpty()
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=child_fd,
            stderr=child_fd,
            timeout=30,
            check=False,
        )
    finally:
        os.close(child_fd)
    # Daemons inherit the tty and keep it open: read what is there now, never wait for EOF.
    chunks = []
    while select.select([main_fd], [], [], 0.05)[0]:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main_fd)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def _allow_traversal(path: Path) -> None:
    """Let the unprivileged postfix and mail users reach ``path``: search bit only, no listing.

    Temporary directories (mkdtemp, pytest's tmp_path) are 0700; Postfix opens its data
    directory and Dovecot its maildirs as other users.
    """
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXGRP | stat.S_IXOTH)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not written)"


class MailLab:
    """Postfix (submission with STARTTLS, client certificate required) and Dovecot (IMAP).

    Postfix accepts mail for ``domains`` only from clients presenting a certificate of the
    test PKI, optionally after SASL PLAIN/LOGIN checked by Dovecot, and delivers it over
    LMTP into Dovecot maildirs. Dovecot serves IMAP with STARTTLS (``imap_port``) and
    implicit TLS (``imaps_port``), requires a valid, non-revoked client certificate, and
    accepts ``password`` for any user (PLAIN/LOGIN) or SASL EXTERNAL with the certificate
    CN as the user name. Everything lives under ``directory``; ports are picked free.
    In every domain, ``indisponible@`` is deferred (450 4.2.1) and ``inconnu@`` refused
    (550 5.1.1), while ``introuvable@`` is accepted then bounced with a failure DSN (5.1.1);
    other domains are refused as relaying (554 5.7.1). Postfix does not check
    CRLs: only Dovecot refuses the revoked certificate.
    """

    host = "127.0.0.1"

    def __init__(
        self, directory: Path, pki: TestPki, domains: Sequence[str], password: str
    ) -> None:
        if not domains:
            raise ValueError("MailLab needs at least one mail domain")
        self.directory = directory
        self.pki = pki
        self.domains = tuple(domains)
        self.password = password
        ports = free_ports(5)
        self.smtp_port, self.imap_port, self.imaps_port, self.lmtp_port, self.auth_port = ports
        self.postfix_dir = directory / "postfix"
        self.dovecot_dir = directory / "dovecot"
        self._started = False

    # -- paths -------------------------------------------------------------------------

    @property
    def postfix_log(self) -> Path:
        return self.postfix_dir / "maillog"

    @property
    def dovecot_log(self) -> Path:
        return self.dovecot_dir / "dovecot.log"

    @property
    def mail_root(self) -> Path:
        """Maildirs live at ``mail_root/<domain>/<local part>/Maildir``."""
        return self.dovecot_dir / "mail"

    def maildir(self, address: str) -> Path:
        local, _, domain = address.partition("@")
        return self.mail_root / domain / local / "Maildir"

    def logs(self, lines: int = 30) -> str:
        """The last lines of both server logs, for failure messages."""
        return (
            f"--- postfix ({self.postfix_log}) ---\n{_tail(self.postfix_log, lines)}\n"
            f"--- dovecot ({self.dovecot_log}) ---\n{_tail(self.dovecot_log, lines)}"
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Write the configs, start both servers and wait until every port accepts."""
        if os.geteuid() != 0:
            raise MailLabError("the mail lab runs Postfix and Dovecot, which need root")
        for tool in ("postfix", "dovecot"):
            if shutil.which(tool) is None:
                raise MailLabError(f"{tool} is not installed (see docs: apt-get install)")
        self.directory.mkdir(parents=True, exist_ok=True)
        _allow_traversal(self.directory.resolve())
        try:
            self._start_dovecot()
            self._start_postfix()
            self._wait_ports()
        except BaseException:
            self.stop()
            raise
        self._started = True

    def stop(self) -> None:
        """Stop both master processes (and their children); safe to call twice."""
        pids = [
            pid
            for pid in (
                _read_pid(self.postfix_dir / "spool" / "pid" / "master.pid"),
                _read_pid(self.dovecot_dir / "run" / "master.pid"),
            )
            if pid is not None and _alive(pid)
        ]
        _terminate(pids, STOP_GRACE)
        self._started = False

    def __enter__(self) -> MailLab:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _wait_ports(self) -> None:
        ports = (self.smtp_port, self.imap_port, self.imaps_port, self.lmtp_port)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(_port_open(self.host, port) for port in ports):
            if time.monotonic() > deadline:
                raise MailLabError(f"mail lab ports did not open in time\n{self.logs()}")
            time.sleep(0.05)

    # -- Dovecot -------------------------------------------------------------------------

    def _start_dovecot(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.dovecot_dir / sub).mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam(MAIL_USER)
        os.chown(self.mail_root, user.pw_uid, user.pw_gid)
        config = self.dovecot_dir / "dovecot.conf"
        config.write_text(self._dovecot_conf())
        code, output = _run_with_tty(["dovecot", "-c", str(config)])
        if code != 0:
            raise MailLabError(f"dovecot did not start ({code}): {output}\n{self.logs()}")

    def _dovecot_conf(self) -> str:
        d = self.dovecot_dir
        pki = self.pki
        return f"""\
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap lmtp
listen = {self.host}
mail_location = maildir:~/Maildir
mail_uid = {MAIL_USER}
mail_gid = {pwd.getpwnam(MAIL_USER).pw_gid}
first_valid_uid = 1
first_valid_gid = 1
postmaster_address = postmaster@{self.domains[0]}
hostname = imap.{self.domains[0]}
ssl = required
ssl_min_protocol = TLSv1.2
ssl_cert = <{pki.server.chain}
ssl_key = <{pki.server.key}
ssl_ca = <{pki.ca_bundle_with_crls}
ssl_verify_client_cert = yes
ssl_require_crl = yes
auth_mechanisms = plain login external
auth_failure_delay = 0
# SASL EXTERNAL needs the certificate CN as user name; Dovecot then also uses it for
# PLAIN/LOGIN, whatever name the client gives (the password is still checked). Only the
# IMAP login process honours it: it is ignored inside a protocol block.
auth_ssl_username_from_cert = yes
# Postfix asks Dovecot to check SMTP AUTH without the client certificate (Postfix has
# checked it), so the certificate requirement of the auth service is for IMAP only.
protocol imap {{
  auth_ssl_require_client_cert = yes
}}
login_trusted_networks = 127.0.0.0/8
passdb {{
  driver = static
  mechanisms = plain login
  args = password={self.password}
}}
passdb {{
  driver = static
  mechanisms = external
  args = nopassword=y
}}
userdb {{
  driver = static
  args = uid={MAIL_USER} gid={pwd.getpwnam(MAIL_USER).pw_gid} home={d}/mail/%d/%n \
allow_all_users=yes
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {self.host}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {self.host}
    port = {self.lmtp_port}
  }}
}}
# The anvil auth penalty (2 s, then 4 s and more per failure from one IP) ignores
# auth_failure_delay; an unreachable penalty socket turns it off.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth {{
  inet_listener auth-postfix {{
    address = {self.host}
    port = {self.auth_port}
  }}
}}
"""

    # -- Postfix -------------------------------------------------------------------------

    def _start_postfix(self) -> None:
        etc = self.postfix_dir / "etc"
        for sub in ("etc", "spool", "data"):
            (self.postfix_dir / sub).mkdir(parents=True, exist_ok=True)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.postfix_dir / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (etc / "main.cf").write_text(self._postfix_main_cf())
        (etc / "master.cf").write_text(_POSTFIX_MASTER_CF.format(port=self.smtp_port))
        code, output = _run_with_tty(["postfix", "-c", str(etc), "start"])
        if code != 0:
            raise MailLabError(f"postfix did not start ({code}): {output}\n{self.logs()}")

    def _postfix_main_cf(self) -> str:
        p = self.postfix_dir
        pki = self.pki
        return f"""\
compatibility_level = 3.6
queue_directory = {p}/spool
data_directory = {p}/data
maillog_file = {p}/maillog
maillog_file_prefixes = {p}
myhostname = smtp.{self.domains[0]}
mydomain = {self.domains[0]}
mydestination =
relay_domains =
inet_interfaces = {self.host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
virtual_mailbox_domains = {" ".join(self.domains)}
virtual_transport = lmtp:inet:{self.host}:{self.lmtp_port}
smtpd_tls_chain_files = {pki.server.key} {pki.server.chain}
smtpd_tls_CAfile = {pki.ca_bundle}
smtpd_tls_security_level = encrypt
smtpd_tls_auth_only = yes
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_tls_protocols = >=TLSv1.2
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = inet:{self.host}:{self.auth_port}
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access {self._recipient_access()}
transport_maps = {self._bounce_transport()}
# Otherwise smtpd refuses at RCPT the addresses that resolve to the error transport.
smtpd_reject_unlisted_recipient = no
smtp_tls_security_level = none
biff = no
"""

    def _recipient_access(self) -> str:
        """An inline access map giving each domain a deferred and an unknown recipient."""
        entries = []
        for domain in self.domains:
            entries.append(f"{{{TEMPFAIL_LOCALPART}@{domain} = {TEMPFAIL_REPLY}}}")
            entries.append(f"{{{UNKNOWN_LOCALPART}@{domain} = {UNKNOWN_REPLY}}}")
        return "inline:{ " + ", ".join(entries) + " }"

    def _bounce_transport(self) -> str:
        """An inline transport map sending each domain's bounce recipient to ``error``."""
        entries = [
            f"{{{BOUNCE_LOCALPART}@{domain} = error:{BOUNCE_REASON}}}" for domain in self.domains
        ]
        return "inline:{ " + ", ".join(entries) + " }"


# The internal services every lab Postfix runs; each instance adds its own listeners.
POSTFIX_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_POSTFIX_MASTER_CF = (
    "127.0.0.1:{port} inet n - n - - smtpd\n"
    + POSTFIX_SERVICES
    + "lmtp      unix  -       -       n       -       -       lmtp\n"
)
