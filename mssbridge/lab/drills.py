"""Stress drills on the loopback lab: a two-way load, a cuttable TCP proxy, and the count.

Used by ``bench/drill_crash.py``, ``bench/drill_outage.py`` and the end-to-end tests that run
small versions of them. Every message carries an id (``Out <tag> r<room> #<n>``, ``In <tag>
#<n>``, files ``out-<tag>-<n>.bin`` / ``in-<tag>-<n>.txt``); :func:`count_mail` and
:func:`count_matrix` read what arrived on the other side and :class:`Tally` says what is
missing, duplicated or out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import secrets
import shutil
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from mssbridge import config as config_module
from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.bridge_process import BridgeProcess
from mssbridge.lab.correspondent import Correspondent
from mssbridge.lab.mailserver import MailLab
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.pki import TestPki, generate_test_pki
from mssbridge.lab.synapse import SynapseLab, free_port
from mssbridge.lab.world import (
    BRIDGE_MAILBOX,
    CLIENT_NAMES,
    CORRESPONDENT,
    MAIL_DOMAINS,
    SERVER_NAME,
    write_bridge_config,
)
from mssbridge.provisioning import registration_yaml

GHOST = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
OUT_TEXT = re.compile(r"Out (\w+) r(\d+) #(\d+)")
IN_TEXT = re.compile(r"In (\w+) #(\d+)")
# Settings of the drills' bridges: a shorter wait for the self-copy after a kill.
DRILL_SETTINGS = ("mailbox.self_copy_wait=8", "metrics.listen=")


# -- a TCP proxy that can be cut ---------------------------------------------------------


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to a target; ``cut()`` refuses and drops every connection.

    It runs its own event loop in a thread, so it serves whatever loop (or none) the caller
    uses. A cut peer looks down to whoever connects through the proxy: connections in
    progress are reset and new ones refused, until ``restore()``.
    """

    def __init__(self, target_host: str, target_port: int, port: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.port = port or free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpProxy:
        self._thread.start()
        self.restore()
        return self

    def stop(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def is_cut(self) -> bool:
        return self._server is None

    def cut(self) -> None:
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    def restore(self) -> None:
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._serve, "127.0.0.1", self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


# -- the lab for the bench drills ----------------------------------------------------------


@dataclass
class DrillLab:
    """PKI, mail servers, Synapse and a bridge process whose peers sit behind proxies."""

    directory: Path
    pki: TestPki
    mail: MailLab
    synapse: SynapseLab
    bridge: BridgeProcess
    correspondent: Correspondent
    proxies: dict[str, TcpProxy]
    database_url: str


def create_postgres_database(admin: str = POSTGRES_ADMIN) -> str:
    """A new empty database (its name) on the local server, through the admin DSN."""
    import asyncpg

    name = f"mssb_drill_{secrets.token_hex(4)}"

    async def run() -> None:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(run())
    return name


def drop_postgres_database(name: str, admin: str = POSTGRES_ADMIN) -> None:
    import asyncpg

    async def run() -> None:
        connection = await asyncpg.connect(admin, timeout=10)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(run())


@contextlib.contextmanager
def drill_lab(
    directory: Path, database: str = "sqlite", extra: Sequence[str] = ()
) -> Iterator[DrillLab]:
    """Wipe ``directory`` and build the lab; the bridge is built, not started.

    The bridge reaches SMTP, Synapse and (PostgreSQL) the database through
    :class:`TcpProxy` instances, and Synapse reaches the bridge's appservice through one
    too (``proxies``: ``smtp``, ``matrix``, ``appservice``, ``database``): cutting one is
    that peer's outage as the bridge sees it, without stopping a server others may use.
    """
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    pki = generate_test_pki(directory / "pki", client_names=CLIENT_NAMES)
    mail = MailLab(directory / "mail", pki, MAIL_DOMAINS, secrets.token_urlsafe(12))
    database_name = None
    with contextlib.ExitStack() as stack:
        stack.enter_context(mail)
        synapse_port, appservice_port, bridge_port = free_port(), free_port(), free_port()
        proxies = {
            "smtp": stack.enter_context(TcpProxy(mail.host, mail.smtp_port)),
            "matrix": stack.enter_context(TcpProxy("127.0.0.1", synapse_port)),
            "appservice": stack.enter_context(TcpProxy("127.0.0.1", bridge_port, appservice_port)),
        }
        if database == "postgresql":
            database_name = create_postgres_database()
            stack.callback(drop_postgres_database, database_name)
            proxies["database"] = stack.enter_context(TcpProxy("127.0.0.1", 5432))
            url = f"postgresql+asyncpg://postgres@127.0.0.1:{proxies['database'].port}/"
            url += database_name
        else:
            url = f"sqlite+aiosqlite:///{directory / 'bridge' / 'store.sqlite3'}"
        as_token, hs_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        config = write_bridge_config(
            directory / "bridge" / "config.toml",
            pki,
            mail,
            homeserver_url=f"http://127.0.0.1:{proxies['matrix'].port}",
            as_token=as_token,
            hs_token=hs_token,
            appservice_port=bridge_port,
            extra=(
                f"bridge.database={url}",
                f"mailbox.smtp.port={proxies['smtp'].port}",
                *DRILL_SETTINGS,
                *extra,
            ),
        )
        # Synapse pushes to the proxy's port, the bridge listens behind it.
        registration = directory / "bridge" / "registration.yaml"
        text = registration_yaml(config_module.load(config))
        registration.write_text(
            text.replace(f"127.0.0.1:{bridge_port}", f"127.0.0.1:{appservice_port}")
        )
        synapse = stack.enter_context(
            SynapseLab(
                directory / "synapse",
                server_name=SERVER_NAME,
                port=synapse_port,
                appservice_files=[registration],
            )
        )
        bridge = BridgeProcess(config, bridge_port, directory / "bridge" / "bridge.log")
        stack.callback(bridge.stop)
        yield DrillLab(
            directory,
            pki,
            mail,
            synapse,
            bridge,
            Correspondent(CORRESPONDENT, mail, pki.client(CORRESPONDENT), name="Dr House"),
            proxies,
            url,
        )


# -- the load ------------------------------------------------------------------------------


@dataclass
class Load:
    """What a drill sends: ``out`` chat messages over the rooms, ``into`` mail replies."""

    tag: str
    rooms: list[str]
    roots: list[str]  # the Message-ID of each room's first mail
    out: int
    into: int
    file_every: int = 10  # every n-th message of each direction is a file

    def out_is_file(self, n: int) -> bool:
        return self.file_every > 0 and n % self.file_every == self.file_every - 1

    def in_has_file(self, n: int) -> bool:
        return self.file_every > 0 and n % self.file_every == self.file_every // 2

    def room_of(self, n: int) -> int:
        return n % len(self.rooms)


async def open_rooms(user: LabMatrixUser, tag: str, count: int) -> list[str]:
    """``count`` portals with the correspondent's ghost, joined."""

    async def one(n: int) -> str:
        room = await user.create_room(invite=[GHOST], name=f"Drill {tag} {n}")
        await user.wait_for_event(
            room,
            lambda e: (
                e.get("type") == "m.room.member"
                and e.get("state_key") == GHOST
                and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=120,
        )
        return room

    rooms = []
    for n in range(count):  # one at a time: the bot's join and greeting stay cheap
        rooms.append(await one(n))
    return rooms


async def start_threads(
    user: LabMatrixUser, mail: MailLab, tag: str, rooms: list[str], timeout: float = 120
) -> list[str]:
    """Send each room's first message and wait for its mail: the threads' roots."""
    for n, room in enumerate(rooms):
        await user.send_text(room, f"Root {tag} {n}")
    deadline = time.monotonic() + timeout
    reader = MaildirReader(mail, CORRESPONDENT)
    while time.monotonic() < deadline:
        roots: dict[int, str] = {}
        for parsed in reader.read():
            match = re.search(rf"Root {tag} (\d+)", parsed.text)
            if match:
                roots[int(match.group(1))] = parsed.message_id
        if len(roots) == len(rooms):
            return [roots[n] for n in range(len(rooms))]
        await asyncio.sleep(0.3)
    raise AssertionError("the threads' first mails did not arrive")


async def retrying(action: Callable[[], Awaitable[Any]], attempts: int = 600) -> Any:
    """Run ``action`` until it succeeds (a peer of the load may be down for a while)."""
    for attempt in range(attempts):
        try:
            return await action()
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
    return None


async def chat_load(
    user: LabMatrixUser,
    load: Load,
    pace: float = 0.0,
    sent: list[int] | None = None,
    numbers: range | None = None,
) -> None:
    """Send the chat side: text, and every ``file_every``-th message a file."""
    for n in numbers if numbers is not None else range(load.out):
        room = load.rooms[load.room_of(n)]
        if load.out_is_file(n):
            name = f"out-{load.tag}-{n}.bin"
            data = name.encode() + secrets.token_bytes(2000)
            await retrying(
                functools.partial(user.send_file, room, name, data, "application/octet-stream")
            )
        else:
            body = f"Out {load.tag} r{load.room_of(n)} #{n}"
            await retrying(functools.partial(user.send_text, room, body))
        if sent is not None:
            sent.append(n)
        if pace:
            await asyncio.sleep(pace)


def mail_load(
    correspondent: Correspondent,
    load: Load,
    pace: float = 0.0,
    sent: list[int] | None = None,
    stop: threading.Event | None = None,
    numbers: range | None = None,
) -> None:
    """Send the mail side (blocking; run it in a thread): replies in the rooms' threads."""
    for n in numbers if numbers is not None else range(load.into):
        room = load.room_of(n)
        attachments = []
        if load.in_has_file(n):
            name = f"in-{load.tag}-{n}.txt"
            attachments.append((name, "text/plain", (name + "\n").encode() * 50))
        for attempt in range(600):
            try:
                correspondent.send(
                    BRIDGE_MAILBOX,
                    f"Re: Drill {load.tag} {room}",
                    f"In {load.tag} #{n}",
                    in_reply_to=load.roots[room],
                    attachments=attachments,
                )
                break
            except OSError:
                if attempt == 599 or (stop is not None and stop.is_set()):
                    raise
                time.sleep(0.5)
        if sent is not None:
            sent.append(n)
        if pace:
            time.sleep(pace)


# -- the count ------------------------------------------------------------------------------


@dataclass
class ParsedMail:
    message_id: str
    in_reply_to: str
    text: str
    files: list[str]


class MaildirReader:
    """Parses each mail file of a maildir once (the drills read it many times)."""

    def __init__(self, mail: MailLab, address: str) -> None:
        self.root = mail.maildir(address)
        self._parsed: dict[str, ParsedMail] = {}

    def read(self) -> list[ParsedMail]:
        for sub in ("new", "cur"):
            folder = self.root / sub
            if not folder.exists():
                continue
            for path in folder.iterdir():
                key = path.name.split(":", 1)[0]
                if key in self._parsed:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    self._parsed[key] = _parse(path.read_bytes())
        return list(self._parsed.values())


def _parse(raw: bytes) -> ParsedMail:
    parsed = message_from_bytes(raw, policy=default_policy)
    assert isinstance(parsed, EmailMessage)
    body = parsed.get_body(preferencelist=("plain",))
    text = str(body.get_content()) if body is not None else ""
    files = [str(p.get_filename()) for p in parsed.iter_attachments() if p.get_filename()]
    return ParsedMail(
        str(parsed.get("Message-ID", "")), str(parsed.get("In-Reply-To", "")), text, files
    )


@dataclass
class Tally:
    """One direction's result: what was sent, what arrived how many times, the order."""

    sent: int
    seen: Counter[int] = field(default_factory=Counter)
    out_of_order: int = 0

    @property
    def delivered(self) -> int:
        return len([n for n in self.seen if n < self.sent])

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.seen.values() if count > 1)

    @property
    def missing(self) -> list[int]:
        return [n for n in range(self.sent) if n not in self.seen]

    @property
    def complete(self) -> bool:
        return not self.missing

    @property
    def exact(self) -> bool:
        return not self.missing and not self.duplicates and set(self.seen) <= set(range(self.sent))


def count_mail(reader: MaildirReader, load: Load) -> Tally:
    """The chat messages that reached the correspondent, by id; and the thread order.

    Out of order: a mail of a room whose parent (In-Reply-To) is a later message of the
    same room, i.e. the thread points backwards.
    """
    tally = Tally(load.out)
    number_of: dict[str, int] = {}
    mails = reader.read()
    for parsed in mails:
        numbers = [
            int(m.group(3)) for m in OUT_TEXT.finditer(parsed.text) if m.group(1) == load.tag
        ]
        numbers += [
            int(name.rsplit("-", 1)[1].split(".")[0])
            for name in parsed.files
            if name.startswith(f"out-{load.tag}-")
        ]
        for n in set(numbers):
            tally.seen[n] += 1
            number_of[parsed.message_id] = n
    for parsed in mails:
        own = number_of.get(parsed.message_id)
        parent = number_of.get(parsed.in_reply_to)
        if own is not None and parent is not None and parent > own:
            tally.out_of_order += 1
    return tally


def arrival_ranks(mail: MailLab, tag: str) -> dict[int, int]:
    """The order in which the correspondent's mails reached the bridge's mailbox (by UID).

    Postfix may deliver mails sent a few milliseconds apart in another order than they were
    sent; the bridge owes the rooms the order of its mailbox, which this reads from
    Dovecot's UID list.
    """
    root = mail.maildir(BRIDGE_MAILBOX)
    paths = {
        path.name.split(":", 1)[0]: path
        for sub in ("new", "cur")
        if (root / sub).exists()
        for path in (root / sub).iterdir()
    }
    ranks: dict[int, int] = {}
    lines = (root / "dovecot-uidlist").read_text().splitlines()[1:]
    for line in lines:
        uid, _, rest = line.partition(" ")
        name = rest.rsplit(":", 1)[-1].strip() if ":" in rest else rest.strip()
        path = paths.get(name)
        if path is None or not uid.isdigit():
            continue
        if name not in _NUMBER_OF_FILE:
            with contextlib.suppress(FileNotFoundError):
                match = IN_TEXT.search(_parse(path.read_bytes()).text)
                found = match and match.group(1) == tag
                _NUMBER_OF_FILE[name] = int(match.group(2)) if match and found else None
        number = _NUMBER_OF_FILE.get(name)
        if number is not None:
            ranks.setdefault(number, int(uid))
    return ranks


_NUMBER_OF_FILE: dict[str, int | None] = {}


async def count_matrix(
    user: LabMatrixUser, load: Load, ranks: dict[int, int] | None = None
) -> Tally:
    """The mails that reached the rooms as the ghost's events, by id; order in each room.

    A mail with a file counts as delivered once both its text and its file are in the room;
    a second copy of either is a duplicate. Order: by ``ranks`` (arrival in the bridge's
    mailbox, :func:`arrival_ranks`), else by number.
    """
    texts: Counter[int] = Counter()
    files: Counter[int] = Counter()
    out_of_order = 0
    for index, room in enumerate(load.rooms):
        last = -1
        for event in await user.history(room):
            if event.get("sender") != GHOST:
                continue
            body = str((event.get("content") or {}).get("body", ""))
            match = IN_TEXT.search(body)
            if match and match.group(1) == load.tag:
                n = int(match.group(2))
                texts[n] += 1
                rank = ranks.get(n, n) if ranks is not None else n
                if load.room_of(n) != index or rank < last:
                    out_of_order += 1
                last = max(last, rank)
            elif body.startswith(f"in-{load.tag}-"):
                files[int(body.rsplit("-", 1)[1].split(".")[0])] += 1
    tally = Tally(load.into, out_of_order=out_of_order)
    for n in set(texts) | set(files):
        if load.in_has_file(n):
            copies = max(texts[n], files[n]) if min(texts[n], files[n]) else 0
        else:
            copies = texts[n] + files[n]
        if copies:
            tally.seen[n] = copies
    return tally


async def wait_complete(
    check: Callable[[], Awaitable[tuple[Tally, Tally]]],
    timeout: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> tuple[Tally, Tally]:
    """Poll ``check`` until both directions are complete or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        out, back = await check()
        if (out.complete and back.complete) or time.monotonic() > deadline:
            return out, back
        if during is not None:
            await during()
        await asyncio.sleep(1)


async def open_rows(database_url: str) -> int:
    """Rows still pending or waiting for a retry in both queues (read-only)."""
    from sqlalchemy import text

    from mssbridge.store.db import make_engine

    engine = make_engine(database_url)
    try:
        async with engine.connect() as connection:
            total = 0
            for name in ("outbox", "inbox"):
                result = await connection.execute(
                    text(f"SELECT count(*) FROM {name} WHERE state IN ('pending', 'retry')")
                )
                total += int(result.scalar_one())
            return total
    finally:
        await engine.dispose()


def table(rows: Sequence[tuple[str, ...]], header: Sequence[str]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tally_rows(out: Tally, back: Tally) -> list[tuple[str, ...]]:
    return [
        (
            name,
            str(t.sent),
            str(t.delivered),
            str(t.duplicates),
            str(len(t.missing)),
            str(t.out_of_order),
        )
        for name, t in (("chat → mail", out), ("mail → chat", back))
    ]


TALLY_HEADER = ("direction", "sent", "delivered", "duplicates", "missing", "out of order")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# -- the crash drill ---------------------------------------------------------------------


@dataclass
class CrashResult:
    out: Tally
    back: Tally
    kills: int
    seconds: float
    open_rows: int


async def crash_drill(
    bridge: BridgeProcess,
    user: LabMatrixUser,
    correspondent: Correspondent,
    mail: MailLab,
    database_url: str,
    *,
    messages: int,
    rooms: int,
    kill_every: tuple[float, float] = (2.0, 6.0),
    max_kills: int = 1_000_000,
    min_kills: int = 0,
    timeout: float = 600.0,
    settle: float = 10.0,
    rng: Any = None,
    say: Callable[[str], None] = lambda _: None,
) -> CrashResult:
    """Two-way load with files while the bridge is SIGKILLed every few seconds.

    The bridge must be running. Kills go on (randomly ``kill_every`` apart, each followed
    by a restart) until both directions are complete or ``max_kills`` is reached; then the
    bridge runs undisturbed until everything arrived, ``settle`` seconds more for a late
    duplicate to show, and the count is taken.
    """
    import random

    rng = rng or random.Random()
    tag = secrets.token_hex(3)
    room_ids = await open_rooms(user, tag, rooms)
    roots = await start_threads(user, mail, tag, room_ids)
    load = Load(tag, room_ids, roots, out=messages // 2, into=messages - messages // 2)
    reader = MaildirReader(mail, CORRESPONDENT)

    async def check() -> tuple[Tally, Tally]:
        ranks = await asyncio.to_thread(arrival_ranks, mail, tag)
        return (
            await asyncio.to_thread(count_mail, reader, load),
            await count_matrix(user, load, ranks),
        )

    started = time.monotonic()
    stop = threading.Event()
    sending = asyncio.gather(
        chat_load(user, load), asyncio.to_thread(mail_load, correspondent, load, 0.0, None, stop)
    )
    kills = 0
    try:
        while kills < max_kills and time.monotonic() - started < timeout:
            await asyncio.sleep(rng.uniform(*kill_every))
            if sending.done():
                out, back = await check()
                say(
                    f"{time.monotonic() - started:.0f} s: {kills} kills, "
                    f"{out.delivered}/{out.sent} mails, {back.delivered}/{back.sent} posts"
                )
                if out.complete and back.complete and kills >= min_kills:
                    break
            bridge.kill()
            kills += 1
            await asyncio.to_thread(bridge.start, 60.0)
        await sending
    finally:
        stop.set()
        if not sending.done():
            sending.cancel()
            with contextlib.suppress(BaseException):
                await sending
    remaining = max(30.0, timeout - (time.monotonic() - started))
    out, back = await wait_complete(check, remaining)
    seconds = time.monotonic() - started
    await asyncio.sleep(settle)
    out, back = await check()
    return CrashResult(out, back, kills, seconds, await drained(database_url))


# -- the outage drill ----------------------------------------------------------------------


@dataclass
class Phase:
    """One outage: the proxies cut together, and what was measured."""

    name: str
    proxies: Sequence[TcpProxy]
    down_seconds: float = 0.0
    sent: int = 0
    recovery_seconds: float | None = None


@dataclass
class OutageResult:
    out: Tally
    back: Tally
    phases: list[Phase]
    notice_seconds: float | None
    open_rows: int


REFUSED_ADDRESS = "inconnu@correspondant.mssante.fr"


async def outage_drill(
    user: LabMatrixUser,
    correspondent: Correspondent,
    mail: MailLab,
    database_url: str,
    phases: list[Phase],
    *,
    outage: float,
    per_phase: int,
    rooms: int,
    bot_id: str,
    recovery_timeout: float = 300.0,
    settle: float = 5.0,
    say: Callable[[str], None] = lambda _: None,
) -> OutageResult:
    """Cut each phase's peers for ``outage`` seconds while both directions keep sending.

    ``per_phase`` messages each way are sent during each outage. After each restore the
    drill waits until everything sent so far has arrived (the recovery time). During the
    first phase a message is also written in a room whose correspondent the mail server
    refuses (550): ``notice_seconds`` is the time from that phase's restore to the bot's
    notice in the room.
    """
    tag = secrets.token_hex(3)
    room_ids = await open_rooms(user, tag, rooms)
    roots = await start_threads(user, mail, tag, room_ids)
    total = per_phase * len(phases)
    load = Load(tag, room_ids, roots, out=total, into=total)
    reader = MaildirReader(mail, CORRESPONDENT)
    refused_ghost = ghost_user_id(REFUSED_ADDRESS, "mss_", SERVER_NAME)
    refused_room = await user.create_room(invite=[refused_ghost], name=f"Refus {tag}")
    await user.wait_for_event(
        refused_room,
        lambda e: (
            e.get("state_key") == refused_ghost
            and (e.get("content") or {}).get("membership") == "join"
        ),
        timeout=120,
    )

    async def check(upto: int) -> tuple[Tally, Tally]:
        part = Load(tag, room_ids, roots, out=upto, into=upto, file_every=load.file_every)
        ranks = await asyncio.to_thread(arrival_ranks, mail, tag)
        return (
            await asyncio.to_thread(count_mail, reader, part),
            await count_matrix(user, part, ranks),
        )

    notice_seconds: float | None = None
    for index, phase in enumerate(phases):
        numbers = range(index * per_phase, (index + 1) * per_phase)
        pace = outage * 0.7 / max(1, per_phase)
        for proxy in phase.proxies:
            proxy.cut()
        cut_at = time.monotonic()
        say(f"{phase.name}: down")
        await asyncio.gather(
            chat_load(user, load, pace, numbers=numbers),
            asyncio.to_thread(mail_load, correspondent, load, pace, None, None, numbers),
        )
        if index == 0:
            await user.send_text(refused_room, f"Refused {tag}")
        await asyncio.sleep(max(0.0, outage - (time.monotonic() - cut_at)))
        for proxy in phase.proxies:
            proxy.restore()
        restored_at = time.monotonic()
        phase.down_seconds = restored_at - cut_at
        phase.sent = 2 * per_phase
        say(f"{phase.name}: up after {phase.down_seconds:.0f} s")
        deadline = restored_at + recovery_timeout
        while time.monotonic() < deadline:
            out, back = await check(numbers.stop)
            if (
                index == 0
                and notice_seconds is None
                and await _has_refusal_notice(user, refused_room, bot_id)
            ):
                notice_seconds = time.monotonic() - restored_at
            if out.complete and back.complete and (index > 0 or notice_seconds is not None):
                phase.recovery_seconds = time.monotonic() - restored_at
                break
            await asyncio.sleep(0.5)
        say(f"{phase.name}: recovered in {phase.recovery_seconds} s")
    await asyncio.sleep(settle)
    out, back = await check(total)
    return OutageResult(out, back, phases, notice_seconds, await drained(database_url))


async def drained(database_url: str, timeout: float = 90.0) -> int:
    """Wait (``timeout`` at most) until no row is left open; return how many are."""
    deadline = time.monotonic() + timeout
    while (left := await open_rows(database_url)) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    return left


async def _has_refusal_notice(user: LabMatrixUser, room: str, bot_id: str) -> bool:
    return any(
        e.get("sender") == bot_id and "non transmis" in str((e.get("content") or {}).get("body"))
        for e in await user.messages(room, limit=50)
    )
