"""A tiny authoritative DNS server on loopback (UDP), serving the lab's test zones."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import cast

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

# (owner name, record type) → record data as in a zone file, e.g.
# {("correspondant.test", "MX"): ["10 mx1.correspondant.test."], ("mx1.correspondant.test", "A"):
#  ["127.0.0.1"]}. Names listed in ``failing`` answer SERVFAIL.
Zone = Mapping[tuple[str, str], Sequence[str]]


def _key(name: str) -> str:
    return name.rstrip(".").lower()


def answer(query: bytes, zone: Zone, failing: Sequence[str] = ()) -> bytes | None:
    """The wire response to one query, or None when it cannot even be parsed."""
    try:
        request = dns.message.from_wire(query)
    except dns.exception.DNSException:
        return None
    response = dns.message.make_response(request)
    response.flags |= dns.flags.AA
    if not request.question:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = request.question[0]
    name = _key(question.name.to_text())
    kind = dns.rdatatype.to_text(question.rdtype)
    records = {(_key(n), t.upper()): v for (n, t), v in zone.items()}
    if name in {_key(f) for f in failing}:
        response.set_rcode(dns.rcode.SERVFAIL)
    elif (name, kind) in records:
        response.answer.append(
            dns.rrset.from_text_list(
                question.name, 60, dns.rdataclass.IN, question.rdtype, list(records[name, kind])
            )
        )
    elif not any(owner == name for owner, _ in records):
        response.set_rcode(dns.rcode.NXDOMAIN)
    return response.to_wire()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, server: LabDnsServer) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport does not derive from DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, self.server.zone, self.server.failing)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


class LabDnsServer:
    """Serves ``zone`` on 127.0.0.1 (a free UDP port) while in ``async with``."""

    host = "127.0.0.1"

    def __init__(self, zone: Zone, failing: Sequence[str] = ()) -> None:
        self.zone = zone
        self.failing = tuple(failing)
        self.port = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> LabDnsServer:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0)
        )
        self._transport = transport
        self.port = int(transport.get_extra_info("sockname")[1])
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._transport is not None:
            self._transport.close()
