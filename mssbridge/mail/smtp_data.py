"""The SMTP DATA stream as a state machine: end, transparency, size, line rules (no I/O)."""

from __future__ import annotations

import enum

CRLF = b"\r\n"
END_OF_DATA = b".\r\n"  # only at the start of a line, so only after a CRLF


class DataVerdict(enum.Enum):
    """What the server answers once the end of data is reached; the first fault found wins."""

    OK = "ok"
    TOO_LARGE = "too large"
    LINE_TOO_LONG = "line too long"
    BARE_LINE_ENDING = "bare CR or LF"


class DataReader:
    """Assembles a message from the pieces read after ``354``, keeping at most ``limit`` bytes.

    Each piece is a line ending in CRLF, or a fragment of an over-long line. The end is a
    line holding only a dot after a CRLF and nothing else: ``<LF>.<LF>`` or ``<CR>.<CR>``
    never end the data, and a CR or LF anywhere but in a CRLF pair makes the message
    refused (RFC 5321 §2.3.8), so a peer that reads line endings differently cannot hide a
    second message in the first ("SMTP smuggling"). The size counted is the message's,
    without the dots of transparency (RFC 1870); past ``limit`` what was kept is dropped
    and the rest only counted, so memory stays bounded whatever the peer sends.
    """

    def __init__(self, limit: int, max_line_length: int) -> None:
        self.limit = limit
        self.max_line_length = max_line_length
        self.verdict = DataVerdict.OK
        self.size = 0  # message bytes so far, transparency dots excluded
        self.received = 0  # bytes read from the peer, for a hard cap on a runaway stream
        self.ended = False
        self._parts: list[bytes] = []
        self._at_line_start = True
        self._line_length = 0
        self._held_cr = b""  # a CR ending a fragment may be the first half of a CRLF

    def feed(self, piece: bytes) -> bool:
        """Take the next piece; True once the end-of-data line has been read."""
        if self.ended:
            raise ValueError("data already ended")
        self.received += len(piece)
        piece, self._held_cr = self._held_cr + piece, b""
        if self._at_line_start and piece == END_OF_DATA:
            self.ended = True
            return True
        complete = piece.endswith(CRLF)
        if complete:
            body = piece[:-2]
        elif piece.endswith(b"\r"):
            body, self._held_cr = piece[:-1], b"\r"
        else:
            body = piece
        if self._at_line_start and body.startswith(b"."):
            body = body[1:]  # transparency (RFC 5321 §4.5.2)
        self._line_length += len(body)
        if b"\r" in body or b"\n" in body:
            self._fault(DataVerdict.BARE_LINE_ENDING)
        if self._line_length > self.max_line_length:
            self._fault(DataVerdict.LINE_TOO_LONG)
        self.size += len(body) + (len(CRLF) if complete else 0)
        if self.size > self.limit:
            self._fault(DataVerdict.TOO_LARGE)
        if self.verdict is DataVerdict.OK:
            self._parts.append(body + CRLF if complete else body)
        if complete:
            self._line_length = 0
        self._at_line_start = complete
        return False

    def _fault(self, verdict: DataVerdict) -> None:
        if self.verdict is DataVerdict.OK:
            self.verdict = verdict
            self._parts.clear()

    def message(self) -> bytes:
        """The message as received, once the data ended without a fault."""
        if not self.ended or self.verdict is not DataVerdict.OK:
            raise ValueError("no message: the data has not ended, or was refused")
        return b"".join(self._parts)
