"""Pure policy: loop prevention, access lists, retry backoff, size limits, command parsing."""

from __future__ import annotations

import pytest

from mssbridge.errors import TooLarge
from mssbridge.matrix.commands import parse
from mssbridge.model import Attachment
from mssbridge.policy.access import is_allowed
from mssbridge.policy.loops import BridgeIdentity, should_store_event
from mssbridge.policy.retry import gives_up, next_delay
from mssbridge.policy.size import check_declared_file, check_encoded

BRIDGE = BridgeIdentity("hospital.test", "mss_bot", "mss_", "bal@chu-test.mssante.fr")


def _event(**fields: object) -> dict[str, object]:
    event: dict[str, object] = {
        "event_id": "$e",
        "room_id": "!r:hospital.test",
        "sender": "@alice:hospital.test",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "hi"},
    }
    event.update(fields)
    return event


@pytest.mark.parametrize(
    ("event", "kept"),
    [
        (_event(), True),
        (_event(sender="@mss_bot:hospital.test"), False),
        (_event(sender="@mss_dr=chu.mssante.fr:hospital.test"), False),
        (_event(sender="@mss_dr=chu.mssante.fr:elsewhere.test"), True),
        (_event(type="m.reaction"), False),
        (_event(type="m.room.redaction", redacts="$x"), True),
        (
            _event(
                type="m.room.member",
                state_key="@mss_a=b.fr:hospital.test",
                content={"membership": "invite"},
            ),
            True,
        ),
        (
            _event(
                type="m.room.member",
                state_key="@bob:hospital.test",
                content={"membership": "invite"},
            ),
            False,
        ),
        (
            _event(
                type="m.room.member",
                state_key="@mss_a=b.fr:hospital.test",
                content={"membership": "leave"},
            ),
            False,
        ),
        (_event(event_id=None), False),
    ],
)
def test_should_store_event(event: dict[str, object], kept: bool) -> None:
    assert should_store_event(event, BRIDGE) is kept


def test_access_list() -> None:
    assert is_allowed("@a:h.test", (":h.test",))
    assert not is_allowed("@a:evil.test", (":h.test",))
    assert is_allowed("@a:evil.test", ("*",))
    assert is_allowed("@a:evil.test", ("@a:evil.test",))
    assert not is_allowed("@a:h.test", ())


def test_backoff_doubles_and_caps() -> None:
    assert [next_delay(n, 5, 60) for n in range(6)] == [5, 10, 20, 40, 60, 60]
    assert next_delay(10_000, 5, 60) == 60
    assert not gives_up(100.0, 150.0, 100.0)
    assert gives_up(100.0, 200.0, 100.0)


def test_size_limit_is_inclusive_and_one_byte_over_is_refused() -> None:
    check_encoded(10_000_000, 10_000_000, ())  # exactly at the limit: accepted
    with pytest.raises(TooLarge) as caught:
        check_encoded(10_000_001, 10_000_000, ())
    assert "1 octet de plus" in caught.value.user_message
    check_declared_file("a.pdf", 10_000_000, 10_000_000)
    with pytest.raises(TooLarge):
        check_declared_file("a.pdf", 10_000_001, 10_000_000)


def test_size_limit_names_the_file_and_excess() -> None:
    check_encoded(1000, 1000, ())
    big = Attachment("scanner.pdf", "application/pdf", b"x" * 10)
    with pytest.raises(TooLarge) as caught:
        check_encoded(1_500_000, 1_000_000, (big,))
    assert "scanner.pdf" in caught.value.user_message
    assert "500 ko" in caught.value.user_message
    assert caught.value.code == "5.3.4"
    with pytest.raises(TooLarge, match=r"IRM\.dcm"):
        check_declared_file("IRM.dcm", 12_000_000, 10_000_000)
    check_declared_file("petit.pdf", None, 10)


@pytest.mark.parametrize(
    ("line", "name", "args", "unknown"),
    [
        ("!mss start dr.house@chu.mssante.fr", "start", ("dr.house@chu.mssante.fr",), None),
        ('!mss start a@b.fr "Avis cardio"', "start", ("a@b.fr", "Avis cardio"), None),
        ("!mss", "help", (), None),
        ("!mss frobnicate", "help", (), "frobnicate"),
        ("!mss START x@y.fr", "start", ("x@y.fr",), None),
        ('!mss start "unclosed', "start", ('"unclosed',), None),
    ],
)
def test_command_parsing(line: str, name: str, args: tuple[str, ...], unknown: str | None) -> None:
    command = parse(line, "!mss")
    assert (command.name, command.args, command.unknown) == (name, args, unknown)
