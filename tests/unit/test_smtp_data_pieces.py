"""The DATA stream written piece by piece: the same bytes as one whole transformation."""

from __future__ import annotations

import random

import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from mssbridge.mail.smtp_out import DATA_PIECE, data_pieces, wire_size


def _whole(message: bytes) -> bytes:
    """What aiosmtplib sends after DATA for ``message``, built at once."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


def test_every_line_starting_with_a_dot_is_doubled_in_every_piece() -> None:
    line = b".ligne qui commence par un point" + b"x" * 40 + b"\r\n"
    message = b"Subject: t\r\n\r\n" + line * (3 * DATA_PIECE // len(line)) + b".\r\n..\r\nfin\r\n"
    pieces = list(data_pieces(message))
    assert len(pieces) > 3
    assert all(len(p) <= DATA_PIECE * 2 for p in pieces)
    # Each piece after the first starts a line, and that line is one of the dotted ones.
    assert all(p.startswith(b"..ligne") for p in pieces[1:-2])
    assert b"".join(pieces) == _whole(message)
    assert b"\r\n.\r\n" not in b"".join(pieces)[:-3]  # the end of data comes only at the end


@pytest.mark.parametrize(
    ("message", "sent"),
    [
        (b"", b"\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".", b"..\r\n.\r\n"),
        (b"a\nb\rc\r\n.d\r", b"a\r\nb\r\nc\r\n..d\r\n.\r\n"),
        (b"a\r\n.\r\nb\r\n", b"a\r\n..\r\nb\r\n.\r\n"),
    ],
)
def test_line_ends_and_dots(message: bytes, sent: bytes) -> None:
    assert b"".join(data_pieces(message, 2)) == sent
    assert wire_size(message) == len(normalize_message_line_endings(message))


def test_any_split_gives_what_aiosmtplib_would_send() -> None:
    rng = random.Random(5321)
    parts = [b"\r", b"\n", b"\r\n", b".", b"..", b"a", b"bc"]
    for _ in range(3000):
        message = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 30)))
        for size in (1, 2, 5, 64):
            assert b"".join(data_pieces(message, size)) == _whole(message), (message, size)
        assert wire_size(message) == len(normalize_message_line_endings(message)), message
