"""Benchmark: the relay under load both ways, against plain clients, and its memory with big mail.

One loopback lab (real Synapse, Postfix, Dovecot, the daemon as a subprocess), then:

- **chat → mail** at each offered rate (``--rates``) and as a burst (highest sustained rate):
  latency from the Matrix send (client clock) and from the bridge's stored row (``outbox
  .created_at``) to the mail file landing in the correspondent's maildir (its mtime: Postfix
  accepted it, then delivered it over LMTP). Compared with a plain aiosmtplib client holding the
  bridge's certificate, same envelope shape (one correspondent and one copy), same size, same
  offered rate and concurrency.
- **mail → chat**: from the mail file landing in the bridge's maildir to the ghost's event
  (``origin_server_ts``), at an offered rate and as a burst; compared with a plain client
  posting the same texts to Synapse as the ghost, one at a time like the inbox worker.
- **memory** (``--big``): peak RSS of the daemon while ``--big`` mails of about 10 MB are in
  flight each way (files posted in as many rooms, mails with an attachment sent at once).

Every figure is printed with ``/proc/loadavg`` taken just before it: the lab machine is shared.

    .venv/bin/python bench/relay_load.py [--rates 10,50] [--count 60] [--burst 150]
        [--rooms 10] [--inbound 40] [--in-rate 5] [--big 10] [--big-size 7200000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sqlite3
import ssl
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib

from mssbridge import config as config_module
from mssbridge.convert.address import ghost_user_id
from mssbridge.lab.demo import RunningLab, running_lab
from mssbridge.lab.matrix_client import LabMatrixUser
from mssbridge.lab.world import BRIDGE_MAILBOX, CORRESPONDENT, SERVER_NAME

MARKER = re.compile(rb"bench-([a-z0-9]+)-(\d+)")
# The plain client's second recipient: same domain as the bridge's self-copy, not read by it.
PLAIN_COPY = "banc-copie@chu-test.mssante.fr"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__().replace("'", "")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    if not values:
        return "– | – | –"
    return f"{statistics.median(values):.0f} | {pct(values, 0.95):.0f} | {pct(values, 0.99):.0f}"


class Maildir:
    """Mail files of one mailbox seen so far: marker → mtime (wall clock, ns precision)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.seen: dict[str, float] = {}
        self.files: dict[str, float] = {}
        self.sizes: list[int] = []

    def scan(self) -> dict[str, float]:
        for sub in ("new", "cur"):
            folder = self.root / sub
            if not folder.exists():
                continue
            for entry in os.scandir(folder):
                base = entry.name.split(":", 1)[0]
                if base in self.files:
                    continue
                try:
                    stat = entry.stat()
                    head = Path(entry.path).read_bytes()
                except FileNotFoundError:  # moved from new/ to cur/ meanwhile
                    continue
                self.files[base] = stat.st_mtime_ns / 1e9
                found = MARKER.search(head)
                if found:
                    key = f"{found.group(1).decode()}-{found.group(2).decode()}"
                    self.seen.setdefault(key, stat.st_mtime_ns / 1e9)
                    self.sizes.append(stat.st_size)
        return self.seen

    async def wait(self, keys: list[str], timeout: float) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = await asyncio.to_thread(self.scan)
            if all(k in seen for k in keys):
                break
            await asyncio.sleep(0.05)
        return {k: self.seen[k] for k in keys if k in self.seen}


async def paced(rate: float | None, count: int, limit: int, job: Callable[[int], Awaitable[Any]]):
    """Start ``job(i)`` at ``rate`` a second (open loop), or all at once, ``limit`` running."""
    gate = asyncio.Semaphore(limit)

    async def run(i: int) -> Any:
        async with gate:
            return await job(i)

    start = time.perf_counter()
    tasks = []
    for i in range(count):
        if rate:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(run(i)))
    return await asyncio.gather(*tasks)


@dataclass
class Result:
    name: str
    load: str
    offered: str
    latencies: list[float]
    rate: float
    extra: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Bench:
    lab: RunningLab
    user: LabMatrixUser
    rooms: list[str]
    correspondent_dir: Maildir
    bridge_dir: Maildir
    database: Path
    args: argparse.Namespace
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def stored_rows(self, event_ids: list[str]) -> dict[str, tuple[float, float]]:
        """outbox created_at and updated_at (row closed) by event id, read-only."""
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            marks = ",".join("?" * len(event_ids))
            rows = db.execute(
                f"SELECT event_id, created_at, updated_at FROM outbox WHERE event_id IN ({marks})",
                event_ids,
            ).fetchall()
        finally:
            db.close()
        return {r[0]: (r[1], r[2]) for r in rows}

    def queue_counts(self) -> tuple[int, int]:
        """(open rows of both queues, inbox rows in all), read-only."""
        db = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10)
        try:
            open_rows = sum(
                db.execute(
                    f"SELECT count(*) FROM {table} WHERE state IN ('pending', 'retry')"
                ).fetchone()[0]
                for table in ("outbox", "inbox")
            )
            inbox = db.execute("SELECT count(*) FROM inbox").fetchone()[0]
        finally:
            db.close()
        return open_rows, inbox

    async def settle(self, quiet: float = 2.0, timeout: float = 180.0) -> None:
        """Wait for empty queues and no new mail for ``quiet`` s: the previous phase's copies
        and delivery reports are work for the bridge too, and must not weigh on the next."""
        deadline = time.monotonic() + timeout
        last = (-1, -1)
        since = time.monotonic()
        while time.monotonic() < deadline:
            counts = await asyncio.to_thread(self.queue_counts)
            if counts != last:
                last, since = counts, time.monotonic()
            elif counts[0] == 0 and time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.2)
        self.notes.append("the queues did not settle between two phases")

    # -- chat → mail -------------------------------------------------------------------

    async def chat_to_mail(self, tag: str, rate: float | None, count: int) -> None:
        load = loadavg()
        sent: dict[str, tuple[float, str]] = {}

        async def send(i: int) -> None:
            room = self.rooms[i % len(self.rooms)]
            started = time.time()
            event_id = await self.user.send_text(room, f"bench-{tag}-{i} message de mesure")
            sent[f"{tag}-{i}"] = (started, event_id)

        await paced(rate, count, 20 if rate is None else count, send)
        keys = list(sent)
        landed = await self.correspondent_dir.wait(keys, timeout=60 + count / 2)
        missing = len(keys) - len(landed)
        rows = await asyncio.to_thread(self.stored_rows, [sent[k][1] for k in keys])
        from_send = [(landed[k] - sent[k][0]) * 1000 for k in keys if k in landed]
        from_row = [
            (landed[k] - rows[sent[k][1]][0]) * 1000
            for k in keys
            if k in landed and sent[k][1] in rows
        ]
        in_bridge = [(u - c) * 1000 for c, u in rows.values()]
        first = min(s for s, _ in sent.values())
        span = max(landed.values(), default=first) - first
        offered = f"{rate:g}/s" if rate else f"burst {count}"
        self.results.append(
            Result(
                "chat → mail, bridge",
                load,
                offered,
                from_send,
                len(landed) / span if span > 0 else 0,
                {"stored row → maildir": from_row, "stored row → row closed": in_bridge},
            )
        )
        if missing:
            self.notes.append(f"chat → mail {offered}: {missing} mail(s) not seen in time")

    async def plain_smtp(self, tag: str, rate: float | None, count: int, reuse: bool) -> None:
        """The same number of mails, same size and envelope shape, by aiosmtplib directly."""
        load = loadavg()
        lab = self.lab
        cert = lab.pki.client(BRIDGE_MAILBOX)
        context = ssl.create_default_context(cafile=str(lab.pki.ca_bundle))
        context.load_cert_chain(str(cert.chain), str(cert.key))
        size = int(statistics.median(self.correspondent_dir.sizes or [2000]))
        sent: dict[str, float] = {}

        def message(i: int) -> EmailMessage:
            mail = EmailMessage()
            mail["From"] = BRIDGE_MAILBOX
            mail["To"] = CORRESPONDENT
            mail["Subject"] = "Banc d'essai"
            mail["Message-ID"] = f"<{uuid.uuid4().hex}@chu-test.mssante.fr>"
            mail.set_content(f"bench-{tag}-{i} " + "x" * max(0, size - 900))
            return mail

        def client() -> aiosmtplib.SMTP:
            return aiosmtplib.SMTP(
                hostname=lab.mail.host, port=lab.mail.smtp_port, start_tls=True, tls_context=context
            )

        envelope = [CORRESPONDENT, PLAIN_COPY]
        concurrency = len(self.rooms)
        if reuse:
            # One connection per "room", each sending its share in turn.
            async def lane(n: int) -> None:
                smtp = client()
                await smtp.connect()
                for i in range(n, count, concurrency):
                    mail = message(i)
                    sent[f"{tag}-{i}"] = time.time()
                    await smtp.sendmail(BRIDGE_MAILBOX, envelope, mail.as_bytes())
                await smtp.quit()

            await asyncio.gather(*(lane(n) for n in range(concurrency)))
        else:

            async def one(i: int) -> None:
                mail = message(i)
                sent[f"{tag}-{i}"] = time.time()
                smtp = client()
                await smtp.connect()
                await smtp.sendmail(BRIDGE_MAILBOX, envelope, mail.as_bytes())
                await smtp.quit()

            await paced(rate, count, concurrency if rate is None else count, one)
        keys = list(sent)
        landed = await self.correspondent_dir.wait(keys, timeout=60 + count / 2)
        first = min(sent.values())
        span = max(landed.values(), default=first) - first
        offered = f"{rate:g}/s" if rate else f"burst {count}"
        self.results.append(
            Result(
                "chat → mail, plain aiosmtplib" + (" (reused connections)" if reuse else ""),
                load,
                offered,
                [(landed[k] - sent[k]) * 1000 for k in keys if k in landed],
                len(landed) / span if span > 0 else 0,
            )
        )

    # -- mail → chat -------------------------------------------------------------------

    async def mail_to_chat(self, tag: str, rate: float | None, count: int, parent: str) -> None:
        load = loadavg()
        lab = self.lab
        cert = lab.pki.client(CORRESPONDENT)
        context = ssl.create_default_context(cafile=str(lab.pki.ca_bundle))
        context.load_cert_chain(str(cert.chain), str(cert.key))
        accepted: dict[str, float] = {}

        async def send(i: int) -> None:
            mail = EmailMessage()
            mail["From"] = f"Dr Gregory House <{CORRESPONDENT}>"
            mail["To"] = BRIDGE_MAILBOX
            mail["Subject"] = "Re: Banc d'essai"
            mail["Message-ID"] = f"<{uuid.uuid4().hex}@correspondant.mssante.fr>"
            mail["In-Reply-To"] = parent
            mail["References"] = parent
            mail.set_content(f"bench-{tag}-{i} réponse de mesure")
            await aiosmtplib.send(
                mail,
                hostname=lab.mail.host,
                port=lab.mail.smtp_port,
                start_tls=True,
                tls_context=context,
            )
            accepted[f"{tag}-{i}"] = time.time()

        await paced(rate, count, 10 if rate is None else count, send)
        keys = list(accepted)
        landed = await self.bridge_dir.wait(keys, timeout=30)
        posted = await self.events_with(tag, keys, timeout=60 + count)
        from_landing = [(posted[k] - landed[k]) * 1000 for k in keys if k in posted and k in landed]
        from_250 = [(posted[k] - accepted[k]) * 1000 for k in keys if k in posted]
        first = min(landed.values(), default=0.0)
        span = max(posted.values(), default=first) - first
        offered = f"{rate:g}/s" if rate else f"burst {count}"
        self.results.append(
            Result(
                "mail → chat, bridge",
                load,
                offered,
                from_landing,
                len(posted) / span if span > 0 else 0,
                {"SMTP 250 → event": from_250},
            )
        )
        if len(posted) < len(keys):
            self.notes.append(f"mail → chat {offered}: {len(keys) - len(posted)} not posted")

    async def events_with(self, tag: str, keys: list[str], timeout: float) -> dict[str, float]:
        """origin_server_ts (s) of the ghost's events carrying each marker, in room 0."""
        ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
        found: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(found) < len(keys):
            for event in await self.user.messages(self.rooms[0], len(keys) + 100):
                body = str((event.get("content") or {}).get("body", ""))
                hit = MARKER.search(body.encode())
                if event.get("sender") == ghost and hit and hit.group(1).decode() == tag:
                    found[f"{tag}-{hit.group(2).decode()}"] = event["origin_server_ts"] / 1000
            await asyncio.sleep(0.3)
        return found

    async def plain_matrix(self, count: int) -> None:
        """A plain client posting the same texts as the ghost, one at a time."""
        load = loadavg()
        settings = config_module.load(self.lab.directory / "bridge" / "config.toml")
        ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
        latencies = []
        async with LabMatrixUser(
            self.lab.synapse.url, settings.matrix.as_token, as_user=ghost
        ) as plain:
            started = time.perf_counter()
            for i in range(count):
                one = time.perf_counter()
                await plain.send_text(self.rooms[1], f"bench-plain-{i} réponse de mesure")
                latencies.append((time.perf_counter() - one) * 1000)
            span = time.perf_counter() - started
        self.results.append(
            Result("mail → chat, plain Matrix client", load, "serial", latencies, count / span)
        )

    # -- memory ------------------------------------------------------------------------

    async def memory(self, count: int, size: int) -> list[str]:
        pid = self.lab.bridge.process.pid if self.lab.bridge.process else 0
        status = Path(f"/proc/{pid}/status")

        def rss(field_name: str) -> int:
            for line in status.read_text().splitlines():
                if line.startswith(field_name):
                    return int(line.split()[1]) * 1024
            return 0

        load = loadavg()
        payloads = [os.urandom(size) for _ in range(count)]
        uris = [await self.user.upload(p, "application/octet-stream", "f.bin") for p in payloads]
        parent = await self.first_message_id()
        cert = self.lab.pki.client(CORRESPONDENT)
        context = ssl.create_default_context(cafile=str(self.lab.pki.ca_bundle))
        context.load_cert_chain(str(cert.chain), str(cert.key))
        mails = []
        for i, payload in enumerate(payloads):
            mail = EmailMessage()
            mail["From"] = CORRESPONDENT
            mail["To"] = BRIDGE_MAILBOX
            mail["Subject"] = "Re: Banc d'essai"
            mail["In-Reply-To"] = parent
            mail.set_content(f"bench-bigin-{i} pièce jointe")
            mail.add_attachment(payload, maintype="application", subtype="octet-stream")
            mails.append(mail)
        del payloads
        baseline = rss("VmRSS:")
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        peak = baseline
        done = asyncio.Event()

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, rss("VmRSS:"))
                await asyncio.sleep(0.02)

        sampler = asyncio.create_task(sample())
        started = time.monotonic()

        async def post(i: int) -> None:
            content = {
                "msgtype": "m.file",
                "body": f"bench-bigout-{i}.bin",
                "filename": f"bench-bigout-{i}.bin",
                "url": uris[i],
                "info": {"mimetype": "application/octet-stream", "size": size},
            }
            await self.user.send_event(self.rooms[i % len(self.rooms)], "m.room.message", content)

        async def deliver(mail: EmailMessage) -> None:
            await aiosmtplib.send(
                mail,
                hostname=self.lab.mail.host,
                port=self.lab.mail.smtp_port,
                start_tls=True,
                tls_context=context,
                timeout=120,
            )

        await asyncio.gather(*(post(i) for i in range(count)), *(deliver(m) for m in mails))
        del mails
        out_keys = [f"bigout-{i}" for i in range(count)]
        out = await self.correspondent_dir.wait(out_keys, timeout=300)
        in_keys = [f"bigin-{i}" for i in range(count)]
        posted = await self.files_posted(in_keys, timeout=300)
        elapsed = time.monotonic() - started
        done.set()
        await sampler
        hwm = rss("VmHWM:")
        peak = max(peak, hwm)
        encoded = int(statistics.median(self.correspondent_dir.sizes[-count:]))
        in_flight = 2 * count * encoded
        target = 150 * 2**20 + 2 * in_flight
        mib = 2**20
        return [
            f"load average before: {load}",
            f"{count} mails each way, {size / 1e6:.1f} MB file each (mail ≈ {encoded / 1e6:.1f} MB)"
            f"; relayed out {len(out)}/{count}, in {len(posted)}/{count} in {elapsed:.0f} s",
            f"daemon RSS before: {baseline / mib:.0f} MiB; peak (VmHWM): {peak / mib:.0f} MiB; "
            f"growth {(peak - baseline) / mib:.0f} MiB",
            f"target: ≤ 150 MiB + 2 × in-flight ({in_flight / mib:.0f} MiB) = "
            f"{target / mib:.0f} MiB → {'met' if peak <= target else 'NOT met'}",
        ]

    async def first_message_id(self) -> str:
        """The Message-ID of the bridge's warm-up mail from room 0 (replies thread into it)."""
        for path in sorted((self.correspondent_dir.root / "new").iterdir()):
            data = path.read_bytes()
            hit = MARKER.search(data)
            found = re.search(rb"^Message-ID:\s*(<[^>]+>)", data, re.I | re.M)
            if hit and hit.group(0) == b"bench-warm-0" and found:
                return found.group(1).decode()
        raise RuntimeError("no mail of room 0 to reply to")

    async def files_posted(self, keys: list[str], timeout: float) -> set[str]:
        ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
        found: set[str] = set()
        deadline = time.monotonic() + timeout
        wanted = {int(k.rsplit("-", 1)[1]) for k in keys}
        while time.monotonic() < deadline and len(found) < len(keys):
            for event in await self.user.messages(self.rooms[0], 200):
                content = event.get("content") or {}
                hit = MARKER.search(str(content.get("body", "")).encode())
                if event.get("sender") != ghost:
                    continue
                if hit and hit.group(1) == b"bigin" and int(hit.group(2)) in wanted:
                    found.add(f"bigin-{int(hit.group(2))}")
            await asyncio.sleep(0.5)
        return found


async def setup(lab: RunningLab, rooms: int) -> tuple[LabMatrixUser, list[str]]:
    ghost = ghost_user_id(CORRESPONDENT, "mss_", SERVER_NAME)
    _, token = lab.synapse.register_user("bench", "bench-password")
    user = LabMatrixUser(lab.synapse.url, token)
    await user.whoami()
    ids = [await user.create_room(invite=[ghost], name=f"Banc {n}") for n in range(rooms)]
    for room in ids:
        await user.wait_for_event(
            room,
            lambda e: (
                e.get("state_key") == ghost and (e.get("content") or {}).get("membership") == "join"
            ),
            timeout=60,
        )
    return user, ids


def table(results: list[Result]) -> list[str]:
    lines = [
        "| flow | offered | load avg before | n | p50 ms | p95 ms | p99 ms | achieved msg/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r.name} | {r.offered} | {r.load} | {len(r.latencies)} | {summary(r.latencies)} "
            f"| {r.rate:.1f} |"
        )
        for name, values in r.extra.items():
            lines.append(f"| ↳ {name} | {r.offered} | | {len(values)} | {summary(values)} | |")
    return lines


def comparison(results: list[Result]) -> list[str]:
    def find(prefix: str, offered: str) -> Result | None:
        return next((r for r in results if r.name == prefix and r.offered == offered), None)

    lines = [
        "| comparison | bridge | plain | ratio / added | target | verdict |",
        *["| --- " * 6 + "|"],
    ]
    for r in results:
        if r.name != "chat → mail, bridge":
            continue
        plain = find("chat → mail, plain aiosmtplib", r.offered)
        if plain is None or not plain.latencies or not r.latencies:
            continue
        added = statistics.median(r.latencies) - statistics.median(plain.latencies)
        lines.append(
            f"| chat → mail p50 added, {r.offered} | {statistics.median(r.latencies):.0f} ms | "
            f"{statistics.median(plain.latencies):.0f} ms | +{added:.0f} ms | ≤ 15 ms | "
            f"{'met' if added <= 15 else 'not met'} |"
        )
        if r.offered.startswith("burst"):
            ratio = r.rate / plain.rate if plain.rate else 0
            lines.append(
                f"| chat → mail sustained, {r.offered} | {r.rate:.1f}/s | {plain.rate:.1f}/s | "
                f"{ratio:.2f}× | ≥ 0.9× | {'met' if ratio >= 0.9 else 'not met'} |"
            )
    bridge_in = [
        r for r in results if r.name == "mail → chat, bridge" and r.offered.startswith("b")
    ]
    plain_in = next((r for r in results if r.name == "mail → chat, plain Matrix client"), None)
    if bridge_in and plain_in:
        ratio = bridge_in[0].rate / plain_in.rate if plain_in.rate else 0
        lines.append(
            f"| mail → chat sustained | {bridge_in[0].rate:.1f}/s | {plain_in.rate:.1f}/s | "
            f"{ratio:.2f}× | ≥ 0.9× | {'met' if ratio >= 0.9 else 'not met'} |"
        )
    return lines


async def run(lab: RunningLab, args: argparse.Namespace) -> list[str]:
    user, rooms = await setup(lab, args.rooms)
    settings = config_module.load(lab.directory / "bridge" / "config.toml")
    database = Path(settings.database_url.split("///", 1)[1])
    bench = Bench(
        lab,
        user,
        rooms,
        Maildir(lab.mail.maildir(CORRESPONDENT)),
        Maildir(lab.mail.maildir(BRIDGE_MAILBOX)),
        database,
        args,
    )
    try:
        # Warm-up: first connections, first display-name lookups; not counted.
        await bench.chat_to_mail("warm", None, len(rooms))
        bench.results.clear()
        for n, rate in enumerate(args.rates):
            await bench.settle()
            await bench.chat_to_mail(f"r{n}", rate, args.count)
            await bench.settle()
            await bench.plain_smtp(f"p{n}", rate, args.count, reuse=False)
        if args.burst:
            await bench.settle()
            await bench.chat_to_mail("burst", None, args.burst)
            await bench.settle()
            await bench.plain_smtp("pburst", None, args.burst, reuse=False)
            await bench.plain_smtp("pburstr", None, args.burst, reuse=True)
        parent = await bench.first_message_id()
        if args.inbound:
            await bench.settle()
            await bench.mail_to_chat("inr", args.in_rate, args.inbound, parent)
            await bench.settle()
            await bench.mail_to_chat("inb", None, args.inbound, parent)
            await bench.settle()
            await bench.plain_matrix(args.inbound)
        await bench.settle()
        lines = [
            f"Lab: {args.rooms} rooms (one conversation each; the bridge sends one mail per room "
            "at a time, rooms in parallel).",
            "",
            *table(bench.results),
            "",
            *comparison(bench.results),
        ]
        if bench.notes:
            lines += ["", *(f"- {n}" for n in bench.notes)]
        if args.big:
            lines += [
                "",
                "Memory:",
                "",
                *(f"- {m}" for m in await bench.memory(args.big, args.big_size)),
            ]
        return lines
    finally:
        await user.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", default="10,50", help="offered chat → mail rates, msg/s ('': none)"
    )
    parser.add_argument("--count", type=int, default=60, help="messages per offered rate")
    parser.add_argument("--burst", type=int, default=150, help="messages of the burst (0: none)")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--inbound", type=int, default=40, help="mails of each mail → chat run")
    parser.add_argument("--in-rate", type=float, default=5.0)
    parser.add_argument("--big", type=int, default=10, help="big mails each way (0: skip)")
    parser.add_argument("--big-size", type=int, default=7_200_000, help="file bytes per mail")
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mssbridge-bench-load"))
    args = parser.parse_args()
    args.rates = [float(r) for r in args.rates.split(",") if r]
    with running_lab(args.dir.resolve(), say=lambda _: None) as lab:
        lines = asyncio.run(run(lab, args))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
