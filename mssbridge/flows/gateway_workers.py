"""Gateway mode's extra SMTP-only processes: started, restarted and stopped by the daemon."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess

from mssbridge.config import Settings
from mssbridge.mail.peer_counts import SharedPeerCounts

log = logging.getLogger("mssbridge.gateway")

# Seconds a worker has to open the store and its sockets; to finish its sessions and commit
# what it queued once told to stop (SIGTERM), before it is killed.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Seconds before a worker that died is started again, doubled while it keeps dying at
# once, up to the maximum.
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
# A worker that ran this long before dying is restarted after RESTART_DELAY again.
STABLE_AFTER = 60.0
READY = b"ready"
STORED = b"stored"
# Followed by a JSON object {reply code: count}: refusals a worker answered, for /metrics.
REFUSED = b"refused:"
# More refusals than this in one message (one turn of a worker's loop) is not a real count.
MAX_REFUSALS_PER_MESSAGE = 100_000


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker process is given: the settings, the bound addresses, where to log."""

    settings: Settings
    listen: tuple[str, ...]
    log_level: int
    log_file: str | None


def listen_entries(addresses: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """The addresses a server is bound to, as ``listen`` entries (the real ports)."""
    return tuple(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in addresses
    )


def _log_target() -> tuple[int, str | None]:
    """The daemon's log level and file (None: standard error), for its workers."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            return root.level, handler.baseFilename
    return root.level, None


class GatewayWorkers:
    """``count`` worker processes accepting on ``listen`` besides the daemon's own server.

    A worker that dies is started again; :meth:`stop` sends SIGTERM and waits: each worker
    stops accepting, closes its sessions (a mail not yet answered 250 is sent again by its
    peer) and commits what it had queued. ``on_stored`` runs in the daemon when a worker
    stored mail, to wake the inbox worker; ``on_refused`` once per refusal a worker answered,
    with its code, to count it in the daemon's metrics.
    """

    def __init__(
        self,
        settings: Settings,
        listen: Sequence[str],
        on_stored: Callable[[], None],
        *,
        count: int,
        on_refused: Callable[[str], None] = lambda code: None,
        peer_counts: SharedPeerCounts | None = None,
        restart_delay: float = RESTART_DELAY,
    ) -> None:
        level, log_file = _log_target()
        self.spec = WorkerSpec(settings, tuple(listen), level, log_file)
        self.on_stored = on_stored
        self.on_refused = on_refused
        self.peer_counts = peer_counts  # row 0 is the daemon's, row N worker N's
        self.count = count
        self.restart_delay = restart_delay
        self.restarts = 0
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[BaseProcess | None] = [None] * count
        self._pipes: list[multiprocessing.connection.Connection | None] = [None] * count
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    @property
    def pids(self) -> list[int]:
        """The process ids of the workers running now."""
        return [p.pid for p in self._processes if p is not None and p.pid and p.is_alive()]

    async def start(self) -> None:
        """Start every worker and wait until each listens; raises if one does not."""
        try:
            for number in range(self.count):
                await self._spawn(number)
        except BaseException:
            await self.stop()
            raise
        self._watchers = [
            asyncio.create_task(self._watch(number), name=f"gateway-worker-{number + 1}")
            for number in range(self.count)
        ]

    async def _spawn(self, number: int) -> None:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=run_worker,
            args=(self.spec, child, self.peer_counts, number + 1),
            name=f"mssbridge-gateway-{number + 1}",
            daemon=True,
        )
        process.start()
        child.close()
        self._processes[number] = process
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(_ready(loop, parent, process), START_TIMEOUT)
        except BaseException:
            parent.close()
            process.kill()
            await _exited(process)
            raise
        loop.add_reader(parent.fileno(), self._read, parent)
        self._pipes[number] = parent
        log.info("gateway: SMTP worker %d started (pid %s)", number + 1, process.pid)

    def _read(self, connection: multiprocessing.connection.Connection) -> None:
        """A worker stored mail or counted refusals (or is gone: its end of the pipe closed)."""
        stored = False
        try:
            while connection.poll():
                stored |= self._report(connection.recv_bytes())
        except (EOFError, OSError):
            _close_pipe(connection)
        if stored:
            self.on_stored()

    def _report(self, message: bytes) -> bool:
        """Pass on one message of a worker; whether it said it stored mail."""
        if message == STORED:
            return True
        for code, count in refusal_counts(message).items():
            for _ in range(count):
                self.on_refused(code)
        return False

    async def _watch(self, number: int) -> None:
        """Start worker ``number`` again each time it dies, until the workers stop."""
        delay = self.restart_delay
        while not self._stopping:
            process = self._processes[number]
            assert process is not None
            started = time.monotonic()
            await _exited(process)
            if self.peer_counts is not None:
                self.peer_counts.clear(number + 1)  # its sessions ended with it
            if self._stopping:
                return
            log.error(
                "gateway: SMTP worker %d (pid %s) ended with code %s; starting it again",
                number + 1,
                process.pid,
                process.exitcode,
            )
            self.restarts += 1
            delay = self.restart_delay if time.monotonic() - started > STABLE_AFTER else delay
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RESTART_DELAY)
            with contextlib.suppress(Exception):
                await self._spawn(number)  # failed: watched again, and retried after a delay

    def reload_tls(self) -> None:
        """SIGHUP: each worker re-reads the certificate, key, anchors and CRLs."""
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGHUP)

    async def stop(self) -> None:
        """SIGTERM to every worker; wait for each to finish (killed past STOP_TIMEOUT)."""
        self._stopping = True
        for watcher in self._watchers:
            watcher.cancel()
        running = [p for p in self._processes if p is not None and p.is_alive()]
        for process in running:
            process.terminate()
        for process in running:
            try:
                await asyncio.wait_for(_exited(process), STOP_TIMEOUT)
            except TimeoutError:
                log.error("gateway: SMTP worker pid %s did not stop; killed", process.pid)
                process.kill()
                await _exited(process)
        for pipe in self._pipes:
            if pipe is not None:
                _close_pipe(pipe)
        self._processes = [None] * self.count
        self._pipes = [None] * self.count


def refusal_counts(message: bytes) -> dict[str, int]:
    """The {code: count} of a worker's REFUSED message; empty for anything else."""
    if not message.startswith(REFUSED):
        return {}
    try:
        counts = json.loads(message[len(REFUSED) :])
    except ValueError:
        counts = None
    if not isinstance(counts, dict):
        log.warning("gateway: unreadable message from an SMTP worker: %r", message[:80])
        return {}
    return {
        str(code): count
        for code, count in counts.items()
        if type(count) is int and 0 < count <= MAX_REFUSALS_PER_MESSAGE  # not a bool either
    }


def _close_pipe(connection: multiprocessing.connection.Connection) -> None:
    if not connection.closed:
        asyncio.get_running_loop().remove_reader(connection.fileno())
        connection.close()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def _exited(process: BaseProcess) -> None:
    """Wait, without blocking the loop, until ``process`` has ended (and reap it)."""
    loop = asyncio.get_running_loop()
    ended = loop.create_future()
    sentinel = process.sentinel
    loop.add_reader(sentinel, _settle, ended)
    try:
        if process.is_alive():
            await ended
    finally:
        loop.remove_reader(sentinel)
    process.join()


async def _ready(
    loop: asyncio.AbstractEventLoop,
    connection: multiprocessing.connection.Connection,
    process: BaseProcess,
) -> None:
    """Wait for a worker's READY; raises if it ended before saying it."""
    said = loop.create_future()
    loop.add_reader(connection.fileno(), _settle, said)
    try:
        await said
    finally:
        loop.remove_reader(connection.fileno())
    try:
        message = connection.recv_bytes()
    except (EOFError, OSError) as exc:
        process.join(1)
        raise RuntimeError(f"gateway worker ended at start (code {process.exitcode})") from exc
    if message != READY:
        raise RuntimeError(f"gateway worker said {message!r} at start")


# -- in the worker process -------------------------------------------------------------------


def run_worker(
    spec: WorkerSpec,
    connection: multiprocessing.connection.Connection,
    peer_counts: SharedPeerCounts | None = None,
    row: int = 0,
) -> None:
    """A worker process's main: accept, store, answer, until SIGTERM or the daemon's end."""
    _setup_logging(spec)
    asyncio.run(_serve(spec, connection, peer_counts, row))


def _setup_logging(spec: WorkerSpec) -> None:
    from mssbridge import logs

    logs.setup(logging.getLevelName(spec.log_level))
    if spec.log_file is not None:
        root = logging.getLogger()
        handler = logging.FileHandler(spec.log_file)
        handler.setFormatter(root.handlers[0].formatter)
        root.handlers[:] = [handler]


class _StoredSignal:
    """Tells the daemon mail was stored, once per turn of the loop however many mails."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self.connection = connection
        self._pending = False

    def __call__(self) -> None:
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._pending = False
        with contextlib.suppress(OSError):
            self.connection.send_bytes(STORED)


class _RefusalCounts:
    """Counts the refusals a worker answers and sends them to the daemon once per turn of
    the loop: a flood of refused sessions makes one small message per turn, not one each."""

    def __init__(self, connection: multiprocessing.connection.Connection) -> None:
        self.connection = connection
        self._counts: collections.Counter[str] = collections.Counter()

    def __call__(self, code: str) -> None:
        if not self._counts:
            asyncio.get_running_loop().call_soon(self._send)
        self._counts[code] += 1

    def _send(self) -> None:
        counts, self._counts = dict(self._counts), collections.Counter()
        with contextlib.suppress(OSError):
            self.connection.send_bytes(REFUSED + json.dumps(counts).encode())


async def _serve(
    spec: WorkerSpec,
    connection: multiprocessing.connection.Connection,
    peer_counts: SharedPeerCounts | None,
    row: int,
) -> None:
    from mssbridge.flows.gateway import GatewayService
    from mssbridge.security.atrest import Sealer
    from mssbridge.store.db import make_engine
    from mssbridge.store.repo import Store

    settings = spec.settings
    store = Store(make_engine(settings.database_url), Sealer.from_file(settings.bridge.key_file))
    await store.verify_key()  # the daemon migrated the store before starting its workers
    service = GatewayService(
        settings, listen=spec.listen, worker=True, peer_counts=peer_counts, row=row
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)  # a Ctrl-C: the daemon stops everything
    loop.add_signal_handler(signal.SIGHUP, service.reload_tls)
    # The daemon gone (its end of the pipe closed): stop too, not hold its port.
    loop.add_reader(connection.fileno(), stop.set)
    try:
        await service.start(store, _StoredSignal(connection), _RefusalCounts(connection))
        connection.send_bytes(READY)
        await stop.wait()
    finally:
        loop.remove_reader(connection.fileno())
        await service.stop()
        await store.engine.dispose()
        connection.close()
