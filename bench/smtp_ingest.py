"""Benchmark: accepted-and-stored mails per second, the gateway against a queueing Postfix.

Each round sends the same load to the gateway (store on SQLite, or PostgreSQL with
``--postgres``) and to a private Postfix that keeps every mail in its hold queue (accepted,
fsync'ed, never delivered), and counts what each stored:

- plain: Postfix's own ``smtp-source -s SESSIONS -l SIZE -m MESSAGES`` (a new connection per
  mail, no TLS). smtp-source cannot STARTTLS, so the gateway runs with
  ``gateway.require_tls = false``, which the config allows on loopback only;
- TLS: this script's client in a separate process (aiosmtplib, STARTTLS with a client
  certificate, a new connection and TLS session per mail), against the gateway as deployed
  (TLS and certificate required) and against Postfix's mutual-TLS listener.

Rounds alternate between the two servers; the figures are medians, each run is printed with
the load average of the machine (/proc/loadavg) when it started. Needs root (Postfix).

    .venv/bin/python bench/smtp_ingest.py
    .venv/bin/python bench/smtp_ingest.py --messages 5000 --rounds 5 --only plain
    .venv/bin/python bench/smtp_ingest.py --postgres postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib
from sqlalchemy import func
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures.database import (
    POSTGRES_ADMIN_ENV,
    create_postgres_database,
    drop_postgres_database,
    open_test_store,
    sqlite_url,
)
from fixtures.gateway import (
    CHAT_DOMAIN,
    PEER_CLIENT,
    PEER_DOMAIN,
    gateway_settings,
    import_peer_whitelist,
    mail,
)

from mssbridge.flows.gateway import GatewayService
from mssbridge.lab.mailserver import POSTFIX_SERVICES, free_ports
from mssbridge.lab.pki import TestPki, generate_test_pki
from mssbridge.store.batch_writer import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT, BatchWriter
from mssbridge.store.tables import Inbox

SMTP_SOURCE = "/usr/sbin/smtp-source"
CPU = tuple[float, float]
SENDER = f"dr.pair@{PEER_DOMAIN}"
RECIPIENT = f"alice@{CHAT_DOMAIN}"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


@dataclass
class Run:
    stored: int
    seconds: float
    load: str
    commits: int | None = None  # the gateway's store transactions
    cpu: tuple[float, float] | None = None  # user, system CPU seconds of the gateway process

    @property
    def rate(self) -> float:
        return self.stored / self.seconds


@dataclass
class Figures:
    runs: dict[str, list[Run]] = field(default_factory=dict)

    def add(self, label: str, run: Run) -> None:
        self.runs.setdefault(label, []).append(run)
        print(
            f"  {label:<28}{run.stored:>7} stored in {run.seconds:6.2f} s = {run.rate:7.0f}/s"
            f"   (load {run.load})"
            + (f"  {run.stored / run.commits:.1f} mails/commit" if run.commits else "")
            + (f"  CPU {run.cpu[0]:.1f} s user {run.cpu[1]:.1f} s sys" if run.cpu else ""),
            flush=True,
        )

    def median(self, label: str) -> float:
        return statistics.median(run.rate for run in self.runs[label])


# -- Postfix, queueing only ---------------------------------------------------------------

_MASTER_CF = (
    """\
127.0.0.1:{plain} inet n - n - - smtpd
  -o smtpd_tls_security_level=none
  -o smtpd_tls_ask_ccert=no
  -o smtpd_tls_req_ccert=no
127.0.0.1:{tls} inet n - n - - smtpd
"""
    + POSTFIX_SERVICES
)


class QueueingPostfix:
    """A private Postfix that puts every accepted mail on hold: queued (fsync'ed), not sent.

    ``in_flow_delay = 0``: nothing is delivered, so Postfix's arrival-rate brake would
    otherwise slow it down after the first mails.
    """

    def __init__(self, directory: Path, pki: TestPki) -> None:
        self.directory = directory
        self.pki = pki
        self.plain_port, self.tls_port = free_ports(2)

    @property
    def etc(self) -> Path:
        return self.directory / "etc"

    def main_cf(self) -> str:
        d, pki = self.directory, self.pki
        return f"""\
compatibility_level = 3.6
queue_directory = {d}/spool
data_directory = {d}/data
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = mx.bench.test
mydestination =
relay_domains =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
smtpd_tls_chain_files = {pki.server.key} {pki.server.chain}
smtpd_tls_CAfile = {pki.ca_bundle}
smtpd_tls_security_level = encrypt
smtpd_tls_ask_ccert = yes
smtpd_tls_req_ccert = yes
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = check_recipient_access static:HOLD
smtpd_client_connection_count_limit = 1000
in_flow_delay = 0
biff = no
"""

    def start(self) -> None:
        for sub in ("etc", "spool", "data"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        user = pwd.getpwnam("postfix")
        os.chown(self.directory / "data", user.pw_uid, user.pw_gid)
        (self.etc / "main.cf").write_text(self.main_cf())
        (self.etc / "master.cf").write_text(
            _MASTER_CF.format(plain=self.plain_port, tls=self.tls_port)
        )
        done = subprocess.run(
            ["postfix", "-c", str(self.etc), "start"], capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"postfix did not start; see {self.directory}/maillog")
        deadline = time.monotonic() + 10
        while not all(_port_open(p) for p in (self.plain_port, self.tls_port)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"postfix ports did not open; see {self.directory}/maillog")
            time.sleep(0.05)

    def stop(self) -> None:
        subprocess.run(["postfix", "-c", str(self.etc), "stop"], capture_output=True, check=False)

    def held(self) -> int:
        """Mails in the hold queue (each one a queue file Postfix fsync'ed before its 250)."""
        hold = self.directory / "spool" / "hold"
        return sum(len(files) for _, _, files in os.walk(hold))

    def clear(self) -> None:
        subprocess.run(
            ["postsuper", "-c", str(self.etc), "-d", "ALL", "hold"],
            capture_output=True,
            check=False,
        )


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


# -- the gateway ----------------------------------------------------------------------------


@contextlib.contextmanager
def database(postgres: str | None, path: Path) -> Iterator[str]:
    """A fresh database URL for one run (a new PostgreSQL database, dropped after)."""
    if postgres is None:
        yield sqlite_url(path)
        return
    os.environ[POSTGRES_ADMIN_ENV] = postgres
    name, url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(name)


@contextlib.asynccontextmanager
async def running_gateway(
    directory: Path,
    pki: TestPki,
    url: str,
    *,
    require_tls: bool,
    max_batch: int,
    max_wait: float,
    writers: int,
    processes: int,
) -> AsyncIterator[tuple[int, Callable[[], Awaitable[int]], Callable[[], int], Callable[[], CPU]]]:
    """A started gateway on a fresh store: (port, count of stored rows, count of commits,
    CPU seconds of its processes)."""
    settings = gateway_settings(
        directory,
        pki,
        f"gateway.require_tls={'true' if require_tls else 'false'}",
        "gateway.max_sessions_per_peer=100",
        "gateway.max_messages_per_session=10000",
        f"gateway.processes={processes}",
        f"bridge.database={url}",  # what the SMTP worker processes open
        f"bridge.key_file={directory / 'key'}",
    )
    async with open_test_store(url, directory / "key") as store:
        await import_peer_whitelist(store, pki)
        service = GatewayService(settings)
        await service.start(store, lambda: None)
        assert service.server is not None and service.intake is not None
        intake = service.intake
        intake.writer = BatchWriter(
            intake.repo.store_mails,
            max_batch=max_batch,
            max_wait=max_wait,
            writers=writers,
        )

        async def stored() -> int:
            async with store.session() as session:
                found = await session.execute(select(func.count()).select_from(Inbox))
                return int(found.scalar_one())

        def commits() -> int:
            return service.intake.writer.batches if service.intake is not None else 0

        def cpu() -> CPU:
            """User and system CPU seconds of the gateway and of its SMTP worker processes."""
            times = os.times()
            user, system = times.user, times.system
            for pid in service.workers.pids if service.workers is not None else []:
                worker_user, worker_system = _process_cpu(pid)
                user, system = user + worker_user, system + worker_system
            return user, system

        try:
            yield service.server.addresses[0][1], stored, commits, cpu
        finally:
            await service.stop()


def _process_cpu(pid: int) -> CPU:
    """User and system CPU seconds of another process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


# -- the loads ------------------------------------------------------------------------------


async def smtp_source(port: int, messages: int, sessions: int, size: int) -> float:
    """Run smtp-source (a new connection per mail); return the wall-clock seconds."""
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        SMTP_SOURCE,
        "-s",
        str(sessions),
        "-l",
        str(size),
        "-m",
        str(messages),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        f"127.0.0.1:{port}",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, errors = await process.communicate()
    elapsed = time.perf_counter() - started
    if process.returncode != 0 or errors:
        print(f"  smtp-source: exit {process.returncode}: {errors.decode()[:300]}", flush=True)
    return elapsed


async def tls_client(port: int, args: argparse.Namespace, pki: TestPki) -> float:
    """Run this script's TLS client in its own process; return the wall-clock seconds."""
    files = pki.client(PEER_CLIENT)
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--messages",
        str(args.messages),
        "--sessions",
        str(args.sessions),
        "--size",
        str(args.size),
        "--tls-client",
        str(port),
        str(pki.ca_bundle),
        str(files.chain),
        str(files.key),
    )
    await process.wait()
    return time.perf_counter() - started


async def _send_tls(
    port: int, context: ssl.SSLContext, numbers: range, size: int, failures: list[str]
) -> None:
    for number in numbers:
        message = mail(f"ingest {os.getpid()} {number}", size=size)
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=True, tls_context=context)
        try:
            await smtp.connect()
            await smtp.sendmail(SENDER, [RECIPIENT], message)
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError) as exc:
            failures.append(type(exc).__name__)
            smtp.close()


async def run_tls_client(args: argparse.Namespace) -> None:
    """The TLS load: a new connection and TLS session per mail, ``sessions`` at a time."""
    port, ca, chain, key = args.tls_client
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    context.load_cert_chain(chain, key)
    failures: list[str] = []
    sessions, messages = args.sessions, args.messages
    await asyncio.gather(
        *(
            _send_tls(int(port), context, range(start, messages, sessions), args.size, failures)
            for start in range(sessions)
        )
    )
    if failures:
        print(f"  TLS client: {len(failures)} failed ({failures[0]})", flush=True)


# -- the rounds -----------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smtp-ingest-") as scratch:
        root = Path(scratch)
        root.chmod(0o755)  # the postfix user opens its data directory below
        pki = generate_test_pki(root / "pki")
        logging.basicConfig(
            filename=root / "gateway.log",
            level=args.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        postfix = QueueingPostfix(root / "postfix", pki)
        postfix.start()
        figures = Figures()
        store_name = "PostgreSQL" if args.postgres else "SQLite"
        print(
            f"{args.messages} mails of {args.size} bytes, {args.sessions} sessions, "
            f"{args.rounds} rounds, gateway store {store_name}, {os.cpu_count()} CPUs, "
            f"group commit of at most {args.max_batch} mails, waiting {args.max_wait} ms, "
            f"{args.writers} writer(s), {args.processes} gateway process(es)",
            flush=True,
        )
        try:
            for number in range(args.rounds):
                print(f"round {number + 1}", flush=True)
                for variant in args.only:
                    await one_round(args, variant, number, root, pki, postfix, figures)
        finally:
            postfix.stop()
        print()
        print(f"{'median':<10}{'mssbridge/s':>12}{'Postfix/s':>12}{'ratio':>8}")
        for variant in args.only:
            ours = figures.median(f"{variant} mssbridge")
            theirs = figures.median(f"{variant} Postfix")
            print(f"{variant:<10}{ours:>12.0f}{theirs:>12.0f}{ours / theirs:>8.2f}")
        print(f"load average at the end: {loadavg()}")


async def one_round(
    args: argparse.Namespace,
    variant: str,
    number: int,
    root: Path,
    pki: TestPki,
    postfix: QueueingPostfix,
    figures: Figures,
) -> None:
    plain = variant == "plain"

    async def load(port: int) -> float:
        if plain:
            return await smtp_source(port, args.messages, args.sessions, args.size)
        return await tls_client(port, args, pki)

    async def ours() -> None:
        directory = root / f"gw-{variant}-{number}"
        directory.mkdir()
        with database(args.postgres, directory / "store.db") as url:
            async with running_gateway(
                directory,
                pki,
                url,
                require_tls=not plain,
                max_batch=args.max_batch,
                max_wait=args.max_wait / 1000,
                writers=args.writers,
                processes=args.processes,
            ) as gateway:
                port, rows, commits, cpu_now = gateway
                load_before = loadavg()
                before = cpu_now()
                seconds = await load(port)
                after = cpu_now()
                cpu = (after[0] - before[0], after[1] - before[1])
                # The workers' commits are not counted here: mails per commit only for one.
                batches = commits() if args.processes == 1 else None
                run = Run(await rows(), seconds, load_before, batches, cpu)
                figures.add(f"{variant} mssbridge", run)

    async def theirs() -> None:
        postfix.clear()
        load_before = loadavg()
        seconds = await load(postfix.plain_port if plain else postfix.tls_port)
        figures.add(f"{variant} Postfix", Run(postfix.held(), seconds, load_before))

    first, second = (ours, theirs) if number % 2 == 0 else (theirs, ours)
    await first()
    await second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=("plain", "tls"), default=["plain", "tls"])
    parser.add_argument(
        "--postgres", default=None, help="admin DSN, e.g. postgresql://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="mails per commit at most"
    )
    parser.add_argument(
        "--max-wait", type=float, default=DEFAULT_MAX_WAIT * 1000, help="ms to wait for more mails"
    )
    parser.add_argument(
        "--writers", type=int, default=1, help="transactions in progress at once (PostgreSQL)"
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="gateway.processes: SMTP processes sharing the port",
    )
    parser.add_argument("--log-level", default="INFO", help="the gateway's log level (to a file)")
    # Internal: the TLS load's own process (PORT CA CHAIN KEY).
    parser.add_argument("--tls-client", nargs=4, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tls_client is not None:
        asyncio.run(run_tls_client(args))
        return
    if shutil.which("postfix") is None or not Path(SMTP_SOURCE).exists():
        parser.error("Postfix and smtp-source are needed")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
