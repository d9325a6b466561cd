"""The gateway's lean aiosmtpd set-up and address parsing agree with aiosmtpd's own."""

from __future__ import annotations

import asyncio
import collections
import random
import ssl
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from mssbridge.mail.smtp_in import (
    GatewayHandler,
    GatewaySMTP,
    PeerSessions,
    ServerLimits,
    simple_path,
)

# Attributes whose values are plain data, compared one by one.
_PLAIN = (
    "__ident__",
    "data_size_limit",
    "enable_SMTPUTF8",
    "_decode_data",
    "hostname",
    "require_starttls",
    "_timeout_duration",
    "_tls_handshake_okay",
    "_auth_require_tls",
    "_proxy_timeout",
    "_authenticator",
    "_auth_callback",
    "_auth_required",
    "_auth_methods",
    "_ehlo_hook_ver",
    "_enforce_call_limit",
    "_call_limit_base",
    "_call_limit_default",
    "line_length_limit",
    "command_size_limit",
)


class _Policy:
    async def check_sender(self, *args: object) -> str | None:
        return None

    def check_recipient(self, address: str, peer: str) -> tuple[str | None, str | None]:
        return None, "@alice:chat.test"

    async def deliver(self, *args: object) -> str:
        return "250 ok"


def _context() -> ssl.SSLContext:
    return ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)


def _lean(handler: GatewayHandler) -> GatewaySMTP:
    return GatewaySMTP(
        handler, sessions=PeerSessions(10), tls_context=_context(), hostname="mx.chat.test"
    )


def _reference(handler: GatewayHandler) -> GatewaySMTP:
    """The same protocol set up by aiosmtpd's own constructor."""
    protocol = GatewaySMTP.__new__(GatewaySMTP)
    limits = handler.limits
    protocol.line_length_limit = limits.max_line_length + 3
    protocol.command_size_limit = limits.max_command_length
    protocol.command_size_limits = collections.defaultdict(lambda: limits.max_command_length)
    options: dict[str, Any] = GatewaySMTP.aiosmtpd_options(limits)
    SMTP.__init__(
        protocol,
        handler,
        hostname="mx.chat.test",
        tls_context=_context(),
        loop=asyncio.get_running_loop(),
        **options,
    )
    return protocol


async def test_lean_set_up_matches_aiosmtpd() -> None:
    handler = GatewayHandler(_Policy(), ServerLimits(max_messages_per_session=7))
    lean, reference = _lean(handler), _reference(handler)
    own = {"gateway", "sessions", "_data_timer_armed", "clock", "on_closed"}
    assert set(vars(lean)) - own == set(vars(reference))
    for name in _PLAIN:
        assert getattr(lean, name) == getattr(reference, name), name
    assert lean._smtp_methods.keys() == reference._smtp_methods.keys()
    assert all(method.__self__ is lean for method in lean._smtp_methods.values())
    assert lean._handle_hooks == reference._handle_hooks
    assert lean._stream_reader._limit == reference._stream_reader._limit  # type: ignore[attr-defined]
    assert lean.loop is reference.loop


async def test_lean_set_up_tables_are_shared_not_rebuilt() -> None:
    handler = GatewayHandler(_Policy(), ServerLimits())
    first, second = _lean(handler), _lean(handler)
    assert first._handle_hooks is second._handle_hooks
    assert "DATA" in first._smtp_methods and "STARTTLS" in first._smtp_methods


_CASES = [
    "<a@b.c>",
    "<a@b.c> SIZE=12",
    "<a@b.c> SIZE=12 BODY=8BITMIME",
    "<a@b.c>  SIZE=12",
    "<a@b.c> SIZE=12 ",
    "<a@b.c> (comment) SIZE=1",
    "<a@b.c>(x)",
    "<>",
    "<> SIZE=10",
    "<a@b.c>  ",
    " <a@b.c> X",
    '<"q r"@b.c>',
    '<"ab"@b.c>',
    "<a..b@c>",
    "<.a@b>",
    "<a.@b>",
    "<a@b.>",
    "<a@[1.2.3.4]>",
    "<A+x=y@B-c.D> BODY=8BITMIME",
    "<dr.pair@peer.test>",
    "<@relay.test:a@b.c>",
    "a@b.c",
    "a@b.c SIZE=1",
    "<a@b.c",
    "<a b@c>",
    "<a@b c>",
    "<a@b.c> X=é",
    "<é@b.c>",
    "<a@b..c>",
    "<a@-b.c>",
]


def _aiosmtpd(arg: str) -> tuple[str | None, str | None]:
    protocol = SMTP.__new__(SMTP)
    return SMTP._getaddr(protocol, arg)


@pytest.mark.parametrize("arg", _CASES)
def test_simple_path_reads_as_aiosmtpd_does(arg: str) -> None:
    simple = simple_path(arg)
    if simple is not None:
        assert simple == _aiosmtpd(arg)


def test_simple_path_takes_the_common_forms() -> None:
    assert simple_path("<dr.pair@peer.test> SIZE=2048") == ("dr.pair@peer.test", "SIZE=2048")
    assert simple_path("<>") == ("<>", "")
    assert simple_path("<> SIZE=1") == ("<>", " SIZE=1")
    assert simple_path('<"q r"@b.c>') is None
    assert simple_path("<a@b.c> (comment)") is None


def test_simple_path_agrees_on_random_arguments() -> None:
    rng = random.Random(5321)
    alphabet = 'ab.@<> ()"\\=-+[]:;,\t é'
    for _ in range(5000):
        arg = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 14)))
        simple = simple_path(arg)
        if simple is not None:
            assert simple == _aiosmtpd(arg), arg


async def test_gateway_protocol_uses_the_fast_path_and_falls_back() -> None:
    protocol = _lean(GatewayHandler(_Policy(), ServerLimits()))
    assert protocol._getaddr("<a@b.c> SIZE=1") == ("a@b.c", "SIZE=1")
    assert protocol._getaddr('<"q r"@b.c>') == _aiosmtpd('<"q r"@b.c>')
    assert protocol._getaddr("<a@b.>") == (None, None)
