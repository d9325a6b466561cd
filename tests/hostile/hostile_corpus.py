"""The hostile-input corpus: generated and hand-written cases for every parser the bridge exposes.

Each family is a function returning named cases; the tests in this folder and the fuzz targets
in ``tests/fuzz/`` read them from here, so a case added once is both asserted and used as a seed.
Nothing is copied from external corpora: every input below is written or generated here.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import stat
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"
SENDER = "dr.house@chu-test.mssante.fr"
KEEP = "conserve"  # a word every "nothing else lost" case puts in its readable text
PER_CASE_SECONDS = 5.0  # generous: a hang or an exponential blowup exceeds it by far


# --------------------------------------------------------------------------- inbound MIME


@dataclass(frozen=True)
class MimeCase:
    """A raw mail and what parsing it must give.

    ``refusal``: the MalformedInput code expected (None: the mail must parse);
    ``may_refuse``: either outcome is fine, but a refusal must be a documented one;
    ``keeps``: words that must reach the text; ``files``: the exact attachment count.
    """

    name: str
    raw: bytes
    refusal: str | None = None
    may_refuse: bool = False
    keeps: tuple[str, ...] = ()
    files: int | None = None


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def simple_mail(
    body: bytes = b"Bonjour, texte conserve.\r\n",
    *,
    headers: bytes = b"",
    subject: bytes = b"Avis",
    content_type: bytes = b"text/plain; charset=utf-8",
    sender: bytes = SENDER.encode(),
) -> bytes:
    head = (
        b"From: Dr House <" + sender + b">\r\n"
        b"To: bal@hopital-test.mssante.fr\r\n"
        b"Subject: " + subject + b"\r\n"
        b"Message-ID: <hostile@chu-test.mssante.fr>\r\n"
        b"MIME-Version: 1.0\r\n" + headers + b"Content-Type: " + content_type + b"\r\n\r\n"
    )
    return head + body


def multipart(parts: list[bytes], boundary: str = "b-1", subtype: str = "mixed") -> bytes:
    """A multipart body (without the outer headers) from already-formed parts."""
    out = b"".join(b"--" + boundary.encode() + b"\r\n" + part + b"\r\n" for part in parts)
    return out + b"--" + boundary.encode() + b"--\r\n"


TEXT_PART = b"Content-Type: text/plain; charset=utf-8\r\n\r\nBonjour, texte conserve.\r\n"


def with_parts(parts: list[bytes], boundary: str = "b-1", **kw: Any) -> bytes:
    return simple_mail(
        multipart(parts, boundary),
        content_type=f'multipart/mixed; boundary="{boundary}"'.encode(),
        **kw,
    )


def attachment(name_header: bytes, data: bytes = b"JVBERi0xLjQK", cte: bytes = b"base64") -> bytes:
    return (
        b"Content-Type: application/pdf\r\n"
        b"Content-Disposition: attachment; " + name_header + b"\r\n"
        b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + data + b"\r\n"
    )


def nested_multipart(depth: int) -> bytes:
    """A visible text part first, then a branch ``depth`` multiparts deep ending in text."""
    inner = b"Content-Type: text/plain\r\n\r\nprofond\r\n"
    for level in reversed(range(depth)):
        inner = f'Content-Type: multipart/mixed; boundary="n{level}"\r\n\r\n'.encode() + multipart(
            [inner], f"n{level}"
        )
    return with_parts([TEXT_PART, inner], boundary="top")


def nested_messages(depth: int) -> bytes:
    inner = b"Content-Type: text/plain\r\n\r\ninterieur\r\n"
    for _ in range(depth):
        inner = b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.fr\r\nSubject: s\r\n" + inner
    return with_parts([TEXT_PART, inner], boundary="top")


def _nesting_cases() -> list[MimeCase]:
    cases = []
    for depth in (1, 2, 5, 10, 18, 19):
        cases.append(
            MimeCase(f"nest-multipart-{depth}", nested_multipart(depth), keeps=(KEEP, "profond"))
        )
    for depth in (20, 21, 25, 50, 100, 150):
        # Deeper than MAX_PART_DEPTH: the deep branch is dropped, the rest of the mail kept.
        cases.append(MimeCase(f"nest-multipart-{depth}", nested_multipart(depth), keeps=(KEEP,)))
    for depth in (500, 1000):
        # So deep the email package gives up: a documented refusal, never a crash.
        cases.append(MimeCase(f"nest-multipart-{depth}", nested_multipart(depth), may_refuse=True))
    for depth in (1, 3, 10, 50, 100):
        cases.append(
            MimeCase(f"nest-rfc822-{depth}", nested_messages(depth), keeps=(KEEP,), files=1)
        )
    for depth in (1000, 3000):
        cases.append(MimeCase(f"nest-rfc822-{depth}", nested_messages(depth), may_refuse=True))
    # An attached mail whose headers are huge: written back as received, never refolded.
    for name, header in (
        ("subject-words", b"Subject: " + b"=?utf-8?q?a?= " * 20000),
        ("to-list", b"To: " + b", ".join([b"a@b.fr"] * 20000)),
        ("ctype-params", b"Content-Type: text/plain; " + b"; ".join([b"p=v"] * 20000)),
    ):
        inner = b"Content-Type: message/rfc822\r\n\r\nFrom: x@y.fr\r\n" + header + b"\r\n\r\nx"
        cases.append(
            MimeCase(
                f"nest-rfc822-huge-{name}", with_parts([TEXT_PART, inner]), keeps=(KEEP,), files=1
            )
        )
    # Multipart and message/rfc822 alternating.
    inner = TEXT_PART
    for level in range(40):
        inner = f'Content-Type: multipart/mixed; boundary="m{level}"\r\n\r\n'.encode() + multipart(
            [b"Content-Type: message/rfc822\r\n\r\nFrom: a@b.fr\r\n" + inner], f"m{level}"
        )
    cases.append(MimeCase("nest-alternating-40", with_parts([TEXT_PART, inner]), keeps=(KEEP,)))
    # The same boundary reused at every level.
    same = TEXT_PART
    for _ in range(30):
        same = b'Content-Type: multipart/mixed; boundary="same"\r\n\r\n' + multipart([same], "same")
    cases.append(
        MimeCase(
            "nest-same-boundary-30",
            simple_mail(
                same.split(b"\r\n\r\n", 1)[1], content_type=b'multipart/mixed; boundary="same"'
            ),
            keeps=(KEEP,),
        )
    )
    return cases


def _boundary_cases() -> list[MimeCase]:
    body = b"Bonjour, texte conserve.\r\n"
    raw: dict[str, tuple[bytes, bool]] = {  # name: (mail, text must be kept)
        "boundary-missing-param": (
            simple_mail(multipart([TEXT_PART]), content_type=b"multipart/mixed"),
            False,
        ),
        "boundary-empty": (
            simple_mail(multipart([TEXT_PART], ""), content_type=b'multipart/mixed; boundary=""'),
            False,
        ),
        "boundary-never-used": (
            simple_mail(body, content_type=b'multipart/mixed; boundary="absent"'),
            False,
        ),
        "boundary-never-closed": (
            simple_mail(
                b"--open\r\n" + TEXT_PART, content_type=b'multipart/mixed; boundary="open"'
            ),
            True,
        ),
        "boundary-only-closing": (
            simple_mail(b"--c--\r\n", content_type=b'multipart/mixed; boundary="c"'),
            False,
        ),
        "boundary-in-body": (
            with_parts(
                [b"Content-Type: text/plain\r\n\r\ntexte conserve\r\n--b-1x pas une limite\r\n--b"],
            ),
            True,
        ),
        "boundary-prefix-of-other": (
            simple_mail(
                b"--a\r\n" + TEXT_PART + b"\r\n--ab\r\n" + TEXT_PART + b"\r\n--a--\r\n",
                content_type=b'multipart/mixed; boundary="a"',
            ),
            True,
        ),
        "boundary-very-long": (with_parts([TEXT_PART], boundary="x" * 5000), True),
        "boundary-with-spaces": (with_parts([TEXT_PART], boundary="a b  c"), True),
        "boundary-with-quotes": (
            simple_mail(
                multipart([TEXT_PART], 'q"q'), content_type=b'multipart/mixed; boundary="q\\"q"'
            ),
            False,
        ),
        "boundary-nul": (with_parts([TEXT_PART], boundary="a\x00b"), False),
        "boundary-8bit": (
            simple_mail(
                b"--\xe9t\xe9\r\n" + TEXT_PART + b"\r\n--\xe9t\xe9--\r\n",
                content_type=b'multipart/mixed; boundary="\xe9t\xe9"',
            ),
            False,
        ),
        "boundary-twice-declared": (
            simple_mail(
                multipart([TEXT_PART], "one"),
                content_type=b'multipart/mixed; boundary="one"; boundary="two"',
            ),
            False,
        ),
        "boundary-preamble-epilogue-huge": (
            simple_mail(
                b"preambule " * 20000 + b"\r\n" + multipart([TEXT_PART]) + b"epilogue " * 20000,
                content_type=b'multipart/mixed; boundary="b-1"',
            ),
            True,
        ),
        "multipart-no-parts": (
            simple_mail(b"--e--\r\n", content_type=b'multipart/alternative; boundary="e"'),
            False,
        ),
        "multipart-3000-empty-parts": (
            simple_mail(
                b"--p\r\n\r\n" * 3000 + b"--p--\r\n", content_type=b'multipart/mixed; boundary="p"'
            ),
            False,
        ),
        "multipart-600-text-parts": (
            with_parts([TEXT_PART] * 600),
            True,
        ),
        "multipart-digest-garbage": (
            simple_mail(
                multipart([b"\x00\x01garbage", b"From: a@b.fr\r\n\r\nx"], "d"),
                content_type=b'multipart/digest; boundary="d"',
            ),
            False,
        ),
        "multipart-with-base64-cte": (
            simple_mail(
                multipart([TEXT_PART]),
                content_type=b'multipart/mixed; boundary="b-1"',
                headers=b"Content-Transfer-Encoding: base64\r\n",
            ),
            False,
        ),
        "boundary-lf-only": (with_parts([TEXT_PART]).replace(b"\r\n", b"\n"), True),
        "boundary-cr-only": (with_parts([TEXT_PART]).replace(b"\r\n", b"\r"), False),
        "mixed-line-endings": (
            with_parts([TEXT_PART]).replace(b"\r\n", b"\n", 3).replace(b"\r\n", b"\r", 2),
            False,
        ),
    }
    return [
        MimeCase(name, mail, keeps=(KEEP,) if kept else ()) for name, (mail, kept) in raw.items()
    ]


# Declared charsets: (name, ASCII text must still read as ASCII).
CHARSETS: tuple[tuple[str, bool], ...] = (
    ("utf-8", True),
    ("us-ascii", True),
    ("iso-8859-1", True),
    ("iso-8859-15", True),
    ("windows-1252", True),
    ("x-unknown-charset", True),
    ("", True),
    ("utf-16", False),
    ("utf-32", False),
    ("utf-7", True),
    ("rot13", True),  # a str-to-str codec, not a text encoding: must be ignored
    ("base64", True),  # bytes-to-bytes codecs: must be ignored
    ("hex", True),
    ("zlib", True),
    ("bz2", True),
    ("uu", True),
    ("quopri", True),
    ("idna", True),
    ("punycode", False),
    ("unicode_escape", True),
    ("raw_unicode_escape", True),
    ("undefined", True),
    ("mbcs", True),
    ("utf-8\x00", True),
    ("../../etc/passwd", True),
    ("utf-8'fr'", True),
    ("c" * 2000, True),
)


def _charset_cases() -> list[MimeCase]:
    cases = []
    for index, (charset, ascii_ok) in enumerate(CHARSETS):
        ctype = b'text/plain; charset="' + charset.encode("latin-1") + b'"'
        keeps = (KEEP,) if ascii_ok else ()
        cases.append(
            MimeCase(f"charset-{index}-ascii", simple_mail(content_type=ctype), keeps=keeps)
        )
        cases.append(
            MimeCase(
                f"charset-{index}-8bit",
                simple_mail(
                    b"texte conserve \xe9\xe8\xff\xfe\x00\xc3\x28\xf0\x9f\x98\r\n",
                    content_type=ctype,
                ),
                keeps=keeps,
            )
        )
        word = b"=?" + charset.encode("latin-1") + b"?q?sujet_conserve=E9?="
        cases.append(
            MimeCase(f"charset-{index}-encoded-word", simple_mail(subject=word), keeps=(KEEP,))
        )
    return cases


def _encoding_cases() -> list[MimeCase]:
    bad_parts: dict[str, tuple[bytes, bytes]] = {  # name: (CTE, payload)
        "base64-garbage": (b"base64", b"!!!! not base64 at all ****"),
        "base64-bad-padding": (b"base64", b"QUJD=RE="),
        "base64-truncated": (b"base64", b"QUJDREVG" * 100 + b"QQ"),
        "base64-nul": (b"base64", b"QU\x00JD"),
        "base64-8bit": (b"base64", b"QUJ\xe9\xff"),
        "base64-only-padding": (b"base64", b"===="),
        "base64-huge-line": (b"base64", b"QUJD" * 250000),
        "base64-whitespace": (b"base64", b"Q U J D\tR E V G\r\n \r\n"),
        "qp-bad-escape": (b"quoted-printable", b"=ZZ=G1=\r\n=4"),
        "qp-soft-break-end": (b"quoted-printable", b"abc="),
        "qp-nul": (b"quoted-printable", b"a=00b\x00c"),
        "qp-long-line": (b"quoted-printable", b"=41" * 100000),
        "qp-only-equals": (b"quoted-printable", b"=" * 5000),
        "cte-unknown": (b"x-weird", b"%PDF-1.4"),
        "cte-uuencode-bad": (b"x-uuencode", b"begin 644 f\r\n!!!!\r\nend\r\n"),
        "cte-uuencode-no-end": (b"x-uuencode", b"begin 644 f\r\nM86)C\r\n"),
        "cte-binary-nul": (b"binary", b"\x00\xff" * 5000),
        "cte-8bit": (b"8bit", b"\xe9t\xe9"),
        "cte-empty": (b"", b"abc"),
        "cte-folded-twice": (b"base64\r\nContent-Transfer-Encoding: quoted-printable", b"QUJD"),
    }
    cases = []
    for name, (cte, payload) in bad_parts.items():
        broken = (
            b'Content-Type: application/pdf; name="doc.pdf"\r\n'
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + payload + b"\r\n"
        )
        # A broken attachment never drops the text next to it.
        cases.append(MimeCase(f"attachment-{name}", with_parts([TEXT_PART, broken]), keeps=(KEEP,)))
        as_text = (
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte + b"\r\n\r\n" + payload + b"\r\n"
        )
        cases.append(MimeCase(f"text-{name}", with_parts([as_text, TEXT_PART]), keeps=(KEEP,)))
    return cases


def _header_cases() -> list[MimeCase]:
    big = b"x" * 1_000_000
    raw: dict[str, bytes] = {
        "subject-1mb": simple_mail(subject=big),
        "subject-unfolded-100k-words": simple_mail(subject=b"mot " * 100_000),
        "header-5000-unknown": simple_mail(headers=b"X-Junk: y\r\n" * 5000),
        "header-to-5000": simple_mail(headers=b"To: " + b", ".join([b"a@b.fr"] * 5000) + b"\r\n"),
        "header-references-5000": simple_mail(
            headers=b"References: " + b" ".join(b"<%d@x.fr>" % i for i in range(5000)) + b"\r\n"
        ),
        "header-folding-10000": simple_mail(subject=b"debut" + b"\r\n suite" * 10000),
        "header-folding-blank-lines": simple_mail(subject=b"a\r\n \r\n \r\n\t\r\n b"),
        "header-folding-only-ws": simple_mail(subject=b"\r\n \r\n\t"),
        "header-continuation-first": b" continuation\r\n" + simple_mail(),
        "header-no-colon": simple_mail(headers=b"this line has no colon\r\n"),
        "header-empty-name": simple_mail(headers=b": value\r\n"),
        "header-8bit-name": simple_mail(headers=b"X-\xe9t\xe9: v\r\n"),
        "header-space-before-colon": simple_mail(headers=b"X-A : v\r\nSubject : autre\r\n"),
        "header-nul-in-subject": simple_mail(subject=b"a\x00b\x00c"),
        "header-nul-in-name": simple_mail(headers=b"X\x00Y: v\r\n"),
        "header-latin1-subject": simple_mail(subject=b"R\xe9sum\xe9 du s\xe9jour"),
        "header-utf8-subject": simple_mail(subject="Résumé séjour".encode()),
        "header-invalid-utf8": simple_mail(subject=b"\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc"),
        "header-bidi-raw": simple_mail(subject="a\u202egnp.exe\u202c".encode()),
        "header-cr-only": simple_mail(subject=b"a\rBcc: x@y.fr"),
        "header-duplicate-from": simple_mail(headers=b"From: other@autre.fr\r\n"),
        "header-duplicate-content-type": simple_mail(headers=b"Content-Type: text/html\r\n"),
        "header-date-garbage": simple_mail(headers=b"Date: 99 Foo 99999 99:99:99 +9999\r\n"),
        "header-date-overflow": simple_mail(
            headers=b"Date: Mon, 1 Jan 999999999 00:00:00 +0000\r\n"
        ),
        "header-date-huge-zone": simple_mail(
            headers=b"Date: Mon, 1 Jan 2024 00:00:00 +99999999999\r\n"
        ),
        "header-message-id-huge": simple_mail(
            headers=b"In-Reply-To: <" + b"a" * 100_000 + b"@x>\r\n"
        ),
        "header-message-id-nested": simple_mail(headers=b"References: <<<a@b>>> <c@<d>>\r\n"),
        "header-auto-submitted-comment": simple_mail(headers=b"Auto-Submitted: (((((no)\r\n"),
        "header-content-type-10k-params": simple_mail(
            content_type=b"text/plain; " + b"; ".join(b"p%d=v" % i for i in range(10000))
        ),
        "header-rfc2231-1000-continuations": with_parts(
            [
                TEXT_PART,
                b"Content-Type: application/pdf\r\nContent-Disposition: attachment; "
                + b"; ".join(b"filename*%d=a%d" % (i, i) for i in range(1000))
                + b"\r\n\r\nx",
            ]
        ),
        "header-rfc2231-bad-charset": with_parts(
            [
                TEXT_PART,
                attachment(b"filename*=x-bogus''%E9t%E9.pdf"),
            ]
        ),
        "header-rfc2231-bad-percent": with_parts(
            [TEXT_PART, attachment(b"filename*=utf-8''%ZZ%%%.pdf")]
        ),
    }
    return [MimeCase(name, mail, keeps=(KEEP,)) for name, mail in raw.items()]


ENCODED_WORDS: tuple[tuple[str, bytes], ...] = (
    ("crlf", b"=?utf-8?q?a=0D=0ABcc:_evil@x.fr?="),
    ("crlf-b", b"=?utf-8?b?YQ0KQmNjOiBldmlsQHguZnI=?="),
    ("nul", b"=?utf-8?q?a=00b?="),
    ("bidi", b"=?utf-8?q?facture=E2=80=AEfdp.exe?="),
    ("zero-width", b"=?utf-8?q?a=E2=80=8Bb=EF=BB=BF?="),
    ("line-sep", b"=?utf-8?q?a=E2=80=A8b=E2=80=A9c=C2=85d?="),
    ("unknown-charset", b"=?x-bogus?q?abc?="),
    ("nontext-codec", b"=?rot13?q?nop?= =?base64?b?QUJD?="),
    ("bad-b64", b"=?utf-8?b?!!!!?="),
    ("bad-encoding-letter", b"=?utf-8?x?abc?="),
    ("empty-charset", b"=??q?abc?="),
    ("empty-payload", b"=?utf-8?q??="),
    ("nested", b"=?utf-8?b?PT91dGYtOD9xP2E9MEQ9MEFiPz0=?="),
    ("truncated", b"=?utf-8?q?abc"),
    ("many-10000", b" ".join([b"=?utf-8?q?a?="] * 10000)),
    ("huge-word", b"=?utf-8?b?" + b"QUJD" * 50000 + b"?="),
    ("utf7", b"=?utf-7?q?+AGEAYgBj-?="),
    ("language-suffix", b"=?utf-8*fr?q?abc?="),
    ("surrogates", b"=?utf-16?b?2ADcANgA?="),
    ("half-sequences", b"=?utf-8?q?=C3?= =?utf-8?q?=A9?="),
)


def _encoded_word_cases() -> list[MimeCase]:
    cases = []
    for name, word in ENCODED_WORDS:
        cases.append(MimeCase(f"ew-subject-{name}", simple_mail(subject=word), keeps=(KEEP,)))
        sender_line = b"From: " + word + b" <" + SENDER.encode() + b">\r\n"
        mail = simple_mail().replace(b"From: Dr House <" + SENDER.encode() + b">\r\n", sender_line)
        cases.append(MimeCase(f"ew-display-name-{name}", mail, keeps=(KEEP,)))
        cases.append(
            MimeCase(
                f"ew-filename-{name}",
                with_parts([TEXT_PART, attachment(b'filename="' + word + b'"')]),
                keeps=(KEEP,),
                files=1,
            )
        )
    return cases


FILENAMES: tuple[tuple[str, bytes], ...] = (
    ("dotdot", b"../../../etc/passwd"),
    ("dotdot-win", b"..\\..\\windows\\system32\\x.dll"),
    ("absolute", b"/etc/passwd"),
    ("drive", b"C:\\boot.ini"),
    ("unc", b"\\\\server\\share\\x.pdf"),
    ("only-dots", b".."),
    ("single-dot", b"."),
    ("empty", b""),
    ("spaces", b"   "),
    ("nul", b"a\x00.pdf"),
    ("crlf", b"a\r\nContent-Type: text/html.pdf"),
    ("rtl", "facture\u202efdp.exe".encode()),
    ("very-long", b"a" * 5000 + b".pdf"),
    ("long-extension", b"a." + b"b" * 5000),
    ("reserved-chars", b'<>:"|?*.pdf'),
    ("hidden-dotfile", b".bashrc"),
    ("trailing-dots", b"rapport.pdf..."),
    ("encoded-slash", b"%2e%2e%2fetc%2fpasswd"),
    ("unicode-slash", "a\u2215b\uff0fc.pdf".encode()),
    ("control-bytes", bytes(range(1, 32)) + b".pdf"),
)


def _filename_cases() -> list[MimeCase]:
    cases = []
    for name, value in FILENAMES:
        quoted = value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
        cases.append(
            MimeCase(
                f"filename-param-{name}",
                with_parts([TEXT_PART, attachment(b'filename="' + quoted + b'"')]),
                keeps=(KEEP,),
                files=1,
            )
        )
        percent = b"".join(b"%%%02X" % byte for byte in value)
        cases.append(
            MimeCase(
                f"filename-rfc2231-{name}",
                with_parts([TEXT_PART, attachment(b"filename*=utf-8''" + percent)]),
                keeps=(KEEP,),
                files=1,
            )
        )
        ctype_name = (
            b'Content-Type: application/pdf; name="' + quoted + b'"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n"
        )
        cases.append(
            MimeCase(
                f"filename-name-{name}",
                with_parts([TEXT_PART, ctype_name]),
                keeps=(KEEP,),
                files=1,
            )
        )
    return cases


def _content_type_cases() -> list[MimeCase]:
    raw: dict[str, bytes] = {
        "ctype-none": simple_mail(content_type=b""),
        "ctype-slash-only": simple_mail(content_type=b"/"),
        "ctype-no-subtype": simple_mail(content_type=b"text/"),
        "ctype-garbage": simple_mail(content_type=b"\x00\xff;;;==;"),
        "ctype-multipart-not-multipart": simple_mail(content_type=b"multipart/mixed; boundary=z"),
        "ctype-message-rfc822-garbage": simple_mail(
            b"\x00\x01\x02", content_type=b"message/rfc822"
        ),
        "ctype-message-partial": simple_mail(content_type=b"message/partial; id=x; number=1"),
        "ctype-message-external": simple_mail(content_type=b"message/external-body"),
        "ctype-report-alone": simple_mail(content_type=b"multipart/report; boundary=r"),
        "ctype-huge": simple_mail(content_type=b"text/" + b"p" * 100_000),
        "ctype-text-html-script": simple_mail(
            b"<p>texte conserve</p><script>alert(1)</script><img src=x onerror=alert(2)>",
            content_type=b"text/html",
        ),
        "ctype-html-only-style": simple_mail(
            b"<style>*{}</style><div style='x' onclick='y'>texte conserve</div>",
            content_type=b"text/html",
        ),
        "ctype-html-deep": simple_mail(
            b"<div>" * 5000 + b"texte conserve" + b"</div>" * 5000, content_type=b"text/html"
        ),
        "ctype-html-unclosed-10000": simple_mail(
            b"<b><i><u>" * 3000 + b"texte conserve", content_type=b"text/html"
        ),
        "ctype-html-entities": simple_mail(
            b"texte conserve &#0; &#xD800; &#99999999999; &unknown; &" * 100,
            content_type=b"text/html",
        ),
        "ctype-html-comment-bomb": simple_mail(
            b"texte conserve <!--" + b"-" * 50_000 + b"<!--" * 3000,
            content_type=b"text/html",
        ),
        "ctype-html-quote-markers": simple_mail(
            b'<div id="appendonsend"></div>' * 1000 + b"texte conserve",
            content_type=b"text/html",
        ),
        "ctype-signature-only": simple_mail(b"MIIB", content_type=b"application/pkcs7-signature"),
    }
    keep_text = {"ctype-none", "ctype-no-subtype", "ctype-garbage", "ctype-huge"} | {
        name for name in raw if name.startswith("ctype-html")
    }
    return [
        MimeCase(name, mail, keeps=(KEEP,) if name in keep_text else ())
        for name, mail in raw.items()
    ]


def _sender_cases() -> list[MimeCase]:
    no_from = simple_mail().replace(b"From: Dr House <" + SENDER.encode() + b">\r\n", b"")
    return [
        MimeCase("sender-missing", no_from, refusal="5.1.7"),
        MimeCase("sender-empty", simple_mail(sender=b""), refusal="5.1.7"),
        MimeCase("sender-garbage", simple_mail(sender=b"@@@"), refusal="5.1.7"),
        MimeCase("sender-no-domain", simple_mail(sender=b"root"), refusal="5.1.7"),
        MimeCase("sender-crlf", simple_mail(sender=b"a@b.fr\r\nBcc: c@d.fr"), may_refuse=True),
        MimeCase("sender-nul", simple_mail(sender=b"a\x00@b.fr"), may_refuse=True),
        MimeCase("sender-8bit", simple_mail(sender=b"\xe9@b.fr"), may_refuse=True),
        MimeCase("sender-huge", simple_mail(sender=b"a" * 100_000 + b"@b.fr"), refusal="5.1.7"),
        MimeCase(
            "sender-only-sender-header",
            no_from.replace(b"To:", b"Sender: " + SENDER.encode() + b"\r\nTo:"),
            keeps=(KEEP,),
        ),
        MimeCase("no-header-at-all", b"\r\n\r\njust a body", refusal="5.6.0"),
        MimeCase("empty-input", b"", refusal="5.6.0"),
        MimeCase("only-newlines", b"\r\n" * 1000, refusal="5.6.0"),
        MimeCase("binary-noise", bytes(range(256)) * 40, may_refuse=True),
        MimeCase("nul-flood", b"\x00" * 100_000, may_refuse=True),
    ]


def _file_cases() -> list[MimeCase]:
    cases = []
    for path in sorted((DATA / "mail").glob("*.eml")):
        keeps = (KEEP,) if KEEP.encode() in path.read_bytes() else ()
        cases.append(MimeCase(f"file-{path.stem}", path.read_bytes(), keeps=keeps))
    return cases


TOKENS = (
    b"\r\n",
    b"\n",
    b"\r",
    b"\x00",
    b"--b-1",
    b"--b-1--",
    b"=?utf-8?q?",
    b"?=",
    b"Content-Type: multipart/mixed; boundary=b-1\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"\r\n\r\n",
    b":",
    b"<",
    b"\xff",
    b"=\r\n",
    b"\r\n.\r\n",
)


def mutate(data: bytes, rng: random.Random, rounds: int = 4) -> bytes:
    """Byte-level mutations: flips, cuts, duplications and MIME-significant tokens."""
    buffer = bytearray(data)
    for _ in range(rounds):
        choice = rng.randrange(5)
        where = rng.randrange(len(buffer) + 1)
        if choice == 0 and buffer:
            buffer[min(where, len(buffer) - 1)] ^= 1 << rng.randrange(8)
        elif choice == 1:
            del buffer[where : where + rng.randrange(1, 64)]
        elif choice == 2:
            buffer[where:where] = rng.choice(TOKENS)
        elif choice == 3 and buffer:
            start = rng.randrange(len(buffer))
            buffer[where:where] = buffer[start : start + rng.randrange(1, 200)]
        else:
            del buffer[where:]
    return bytes(buffer)


def mime_seeds() -> list[bytes]:
    """Well-formed and hand-written mails the mutations and the fuzzers start from."""
    seeds = [path.read_bytes() for path in sorted((DATA / "mail").glob("*.eml"))]
    seeds += [
        simple_mail(),
        with_parts([TEXT_PART, attachment(b'filename="a.pdf"')]),
        nested_multipart(3),
        nested_messages(2),
    ]
    return seeds


def _mutation_cases(count: int = 120) -> list[MimeCase]:
    rng = random.Random(20240501)
    seeds = mime_seeds()
    return [
        MimeCase(f"mutation-{index:03d}", mutate(seeds[index % len(seeds)], rng), may_refuse=True)
        for index in range(count)
    ]


@cache
def mime_cases() -> tuple[MimeCase, ...]:
    families: list[Callable[[], list[MimeCase]]] = [
        _nesting_cases,
        _boundary_cases,
        _charset_cases,
        _encoding_cases,
        _header_cases,
        _encoded_word_cases,
        _filename_cases,
        _content_type_cases,
        _sender_cases,
        _file_cases,
        _mutation_cases,
    ]
    cases = tuple(case for family in families for case in family())
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


# --------------------------------------------------------------------------- text the bridge sends


SMUGGLING: tuple[tuple[str, str], ...] = (
    ("lf-dot-lf", "avant\n.\napres"),
    ("cr-dot-lf", "avant\r.\napres"),
    ("lf-dot-cr", "avant\n.\rapres"),
    ("cr-dot-cr", "avant\r.\rapres"),
    ("crlf-dot-crlf", "avant\r\n.\r\napres"),
    ("crlf-dot-lf", "avant\r\n.\napres"),
    ("lf-dot-crlf", "avant\n.\r\napres"),
    ("dot-first", ".\r\napres"),
    ("dot-last", "avant\r\n."),
    ("dot-only", "."),
    ("double-dot", "avant\n..\napres"),
    ("bare-cr", "avant\rapres"),
    ("bare-lf", "avant\napres"),
    ("cr-cr-lf", "avant\r\r\napres"),
    ("nul", "avant\x00apres"),
    (
        "full-second-message",
        "avant\r\n.\r\nMAIL FROM:<evil@x.fr>\r\nRCPT TO:<victim@y.fr>\r\nDATA\r\n"
        "From: evil@x.fr\r\n\r\nsmuggled\r\n.\r\napres",
    ),
    ("bare-lf-second-message", "avant\n.\nMAIL FROM:<evil@x.fr>\nDATA\nsmuggled\n.\napres"),
    ("dots-many", "\n".join(["."] * 500) + "\napres"),
    ("long-line", "avant " + "x" * 5000 + "\n.\napres"),
    ("unicode-separators", "avant\u2028.\u2029apres\x85.\x0bfin"),
)

INJECTIONS: tuple[tuple[str, str], ...] = (
    ("crlf-bcc", "Nom\r\nBcc: evil@x.fr"),
    ("lf-bcc", "Nom\nBcc: evil@x.fr"),
    ("cr-bcc", "Nom\rBcc: evil@x.fr"),
    ("crlf-body", "Nom\r\n\r\ncorps injecte"),
    ("encoded-crlf", "=?utf-8?q?Nom=0D=0ABcc:_evil@x.fr?="),
    ("nul", "Nom\x00Bcc: evil@x.fr"),
    ("line-separator", "Nom\u2028Bcc: evil@x.fr"),
    ("nel", "Nom\x85Bcc: evil@x.fr"),
    ("rtl-override", "Dr \u202eesuoH\u202c"),
    ("bidi-isolates", "\u2066Nom\u2069\u200f\u200e"),
    ("zero-width", "N\u200bo\ufeffm"),
    ("very-long", "Nom " * 5000),
    ("very-long-word", "N" * 20000),
    ("only-controls", "".join(chr(c) for c in range(32)) + "\x7f"),
    ("only-spaces", "   \t  "),
    ("quotes-angles", 'Nom" <evil@x.fr>, "x'),
    ("comment-chars", "Nom (a) \\ ; , : @"),
    ("emoji-combining", "Nom 👩‍⚕️ e\u0301" + "\u0301" * 500),
    ("lone-surrogate", "Nom\ud800x"),
    ("tab-folding", "Nom\r\n\tBcc: evil@x.fr"),
    # An encoded word inside one: one decoding leaves "=?utf-8?q?a=0D=0ABcc…?=".
    ("nested-encoded", "=?utf-8?b?PT91dGYtOD9xP2E9MEQ9MEFCY2M9M0FfZXZpbD00MHguZnI/PQ==?="),
    # Not valid base64 for a strict decoder, decoded anyway by a lenient one.
    ("lenient-base64", "=?utf-8?b?DQpCY2M6IGV2aWxAeC5mcg*?="),
)


# --------------------------------------------------------------------------- Matrix events


@dataclass(frozen=True)
class EventCase:
    """A Matrix ``content`` and what the pure conversion must make of it.

    ``outcome``: "text" (a ChatText), "refused:<code>" (MalformedInput/Rejected with that code);
    ``file``: what attachment_ref gives: "none", "ref" or "refused:<code>".
    """

    name: str
    content: Any
    outcome: str
    file: str = "none"
    keeps: str | None = None


def event_cases() -> tuple[EventCase, ...]:
    huge = "mot " * 250_000
    cases = [
        EventCase("content-list", [1, 2], "refused:5.6.0", "refused:5.6.0"),
        EventCase("content-string", "body", "refused:5.6.0", "refused:5.6.0"),
        EventCase("content-int", 42, "refused:5.6.0", "refused:5.6.0"),
        EventCase("content-none", None, "refused:5.6.0", "refused:5.6.0"),
        EventCase("content-bool", True, "refused:5.6.0", "refused:5.6.0"),
        EventCase("content-empty", {}, "refused:5.6.0"),
        EventCase("body-missing", {"msgtype": "m.text"}, "refused:5.6.0"),
        EventCase("body-int", {"msgtype": "m.text", "body": 1}, "refused:5.6.0"),
        EventCase("body-list", {"msgtype": "m.text", "body": ["a"]}, "refused:5.6.0"),
        EventCase("body-dict", {"msgtype": "m.text", "body": {"a": 1}}, "refused:5.6.0"),
        EventCase("body-null", {"msgtype": "m.text", "body": None}, "refused:5.6.0"),
        EventCase("body-huge", {"msgtype": "m.text", "body": huge}, "text", keeps="mot"),
        EventCase("body-empty", {"msgtype": "m.text", "body": ""}, "text"),
        EventCase("body-nul", {"msgtype": "m.text", "body": "a\x00b conserve"}, "text", keeps=KEEP),
        EventCase(
            "body-surrogate", {"msgtype": "m.text", "body": "a\ud800 conserve"}, "text", keeps=KEEP
        ),
        EventCase(
            "msgtype-unknown", {"msgtype": "org.x.y", "body": "conserve"}, "text", keeps=KEEP
        ),
        EventCase("msgtype-missing", {"body": "conserve"}, "text", keeps=KEEP),
        EventCase("msgtype-int", {"msgtype": 7, "body": "conserve"}, "text", keeps=KEEP),
        EventCase("msgtype-list", {"msgtype": ["m.file"], "body": "conserve"}, "text", keeps=KEEP),
        EventCase(
            "formatted-not-string",
            {"msgtype": "m.text", "body": "conserve", "format": HTML, "formatted_body": 5},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "formatted-script",
            {
                "msgtype": "m.text",
                "body": "conserve",
                "format": HTML,
                "formatted_body": "<script>alert(1)</script><img src=x onerror=y><b>conserve</b>",
            },
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "formatted-surrogate",
            {
                "msgtype": "m.text",
                "body": "conserve",
                "format": HTML,
                "formatted_body": "\udfff<b>x</b>",
            },
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "formatted-deep",
            {
                "msgtype": "m.text",
                "body": "conserve",
                "format": HTML,
                "formatted_body": "<blockquote>" * 5000 + "conserve",
            },
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "format-unknown",
            {"msgtype": "m.text", "body": "conserve", "format": "x", "formatted_body": "<b>y</b>"},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "relates-string",
            {"msgtype": "m.text", "body": "conserve", "m.relates_to": "x"},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "relates-list",
            {"msgtype": "m.text", "body": "conserve", "m.relates_to": [1]},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "reply-to-nowhere",
            {
                "msgtype": "m.text",
                "body": "> <@a:b> citation\n\nconserve",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$nowhere"}},
            },
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "reply-without-event-id",
            {"msgtype": "m.text", "body": "conserve", "m.relates_to": {"m.in_reply_to": {}}},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "reply-to-not-dict",
            {"msgtype": "m.text", "body": "conserve", "m.relates_to": {"m.in_reply_to": "$x"}},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "reply-only-quotes",
            {
                "msgtype": "m.text",
                "body": "> a\n> b",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}},
            },
            "text",
        ),
        EventCase(
            "edit-new-content-not-dict",
            {
                "msgtype": "m.text",
                "body": "* conserve",
                "m.new_content": "x",
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$nowhere"},
            },
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "edit-new-content-no-body",
            {
                "msgtype": "m.text",
                "body": "* x",
                "m.new_content": {"msgtype": "m.text"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$nowhere"},
            },
            "refused:5.6.0",
        ),
        EventCase(
            "edit-relation-type-int",
            {"msgtype": "m.text", "body": "conserve", "m.relates_to": {"rel_type": 5}},
            "text",
            keeps=KEEP,
        ),
        EventCase(
            "edit-nested-edit",
            {
                "msgtype": "m.text",
                "body": "* x",
                "m.new_content": {
                    "msgtype": "m.text",
                    "body": "conserve",
                    "m.new_content": {"body": 5},
                    "m.relates_to": {"rel_type": "m.replace"},
                },
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"},
            },
            "text",
            keeps=KEEP,
        ),
        EventCase("emote-body-int", {"msgtype": "m.emote", "body": 3}, "refused:5.6.0"),
        EventCase("notice", {"msgtype": "m.notice", "body": "conserve"}, "text", keeps=KEEP),
    ]
    urls = {
        "mxc-ok": ("mxc://hospital.test/abcDEF123", "ref"),
        "url-http": ("https://evil.example/x", "refused:5.6.0"),
        "url-file": ("file:///etc/passwd", "refused:5.6.0"),
        "url-mxc-traversal": ("mxc://hospital.test/../../etc", "refused:5.6.0"),
        "url-mxc-no-media": ("mxc://hospital.test/", "refused:5.6.0"),
        "url-mxc-no-server": ("mxc:///abc", "refused:5.6.0"),
        "url-mxc-query": ("mxc://hospital.test/abc?x=1", "refused:5.6.0"),
        "url-mxc-crlf": ("mxc://hospital.test/abc\r\nX: y", "refused:5.6.0"),
        "url-mxc-nul": ("mxc://hospital.test/abc\x00", "refused:5.6.0"),
        "url-mxc-userinfo": ("mxc://user@hospital.test/abc", "refused:5.6.0"),
        "url-mxc-huge": ("mxc://hospital.test/" + "a" * 100_000, "ref"),
        "url-int": (5, "refused:5.6.0"),
        "url-missing": (None, "refused:5.6.0"),
        "url-list": (["mxc://hospital.test/abc"], "refused:5.6.0"),
    }
    for name, (url, outcome) in urls.items():
        for msgtype in ("m.file", "m.image"):
            content: dict[str, Any] = {"msgtype": msgtype, "body": "piece.pdf"}
            if url is not None:
                content["url"] = url
            cases.append(EventCase(f"{msgtype}-{name}", content, "text", outcome))
    info_variants: dict[str, Any] = {
        "info-string": "x",
        "info-list": [1],
        "info-size-negative": {"size": -1},
        "info-size-string": {"size": "10"},
        "info-size-bool": {"size": True},
        "info-size-huge": {"size": 10**30},
        "info-size-float": {"size": 1.5},
        "info-mimetype-int": {"mimetype": 5},
        "info-mimetype-crlf": {"mimetype": "text/html\r\nBcc: x@y.fr"},
        "info-mimetype-huge": {"mimetype": "a/" + "b" * 10000},
        "info-mimetype-params": {"mimetype": 'text/plain; charset="x\r\n"'},
    }
    for name, info in info_variants.items():
        content = {
            "msgtype": "m.file",
            "body": "piece.pdf",
            "url": "mxc://h.test/abc",
            "info": info,
        }
        cases.append(EventCase(f"file-{name}", content, "text", "ref"))
    for name, value in FILENAMES:
        content = {
            "msgtype": "m.file",
            "body": "legende conserve",
            "filename": value.decode("utf-8", "replace"),
            "url": "mxc://h.test/abc",
        }
        cases.append(EventCase(f"file-name-{name}", content, "text", "ref"))
    cases.append(
        EventCase(
            "file-encrypted",
            {"msgtype": "m.file", "body": "x", "file": {"url": "mxc://h.test/a"}},
            "text",
            "refused:5.6.1",
        )
    )
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return tuple(cases)


HTML = "org.matrix.custom.html"


# ------------------------------------------------------------------------ appservice transactions


def transaction_bodies() -> dict[str, tuple[bytes, int]]:
    """Raw PUT bodies and the HTTP status the endpoint must answer."""
    good = b'{"events": []}'
    deep = b'{"events": [{"content": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    return {
        "empty": (b"", 400),
        "not-json": (b"not json", 400),
        "invalid-utf8": (b'{"events": ["\xff\xfe"]}', 400),
        "utf16-json": ('{"events": []}'.encode("utf-16"), 200),
        "json-array": (b"[]", 400),
        "json-string": (b'"events"', 400),
        "json-null": (b"null", 400),
        "events-missing": (b"{}", 400),
        "events-null": (b'{"events": null}', 400),
        "events-object": (b'{"events": {}}', 400),
        "events-string": (b'{"events": "x"}', 400),
        "events-empty": (good, 200),
        "events-junk-items": (b'{"events": [1, "x", null, [], true, 1.5]}', 200),
        "deep-nesting": (deep, 400),
        "nan-values": (b'{"events": [NaN, Infinity, -Infinity]}', 200),
        "duplicate-keys": (b'{"events": 1, "events": []}', 200),
        "lone-surrogate": (b'{"events": [{"body": "\\ud800"}]}', 200),
        "huge-number": (b'{"events": [' + b"9" * 5000 + b"]}", 400),
        "trailing-garbage": (b'{"events": []} x', 400),
        "bom-utf8": (b"\xef\xbb\xbf" + good, 200),
    }


def transaction_events() -> list[tuple[str, Any, bool]]:
    """Events of a well-formed transaction and whether the bridge must store them."""
    base = {
        "event_id": "$e",
        "room_id": "!r:hospital.test",
        "sender": "@alice:hospital.test",
        "type": "m.room.message",
        "content": {"msgtype": "m.text", "body": "x"},
    }

    def changed(**fields: Any) -> dict[str, Any]:
        event = {**base, **fields}
        return {key: value for key, value in event.items() if value is not _DROP}

    return [
        ("ok", changed(), True),
        ("no-event-id", changed(event_id=_DROP), False),
        ("event-id-int", changed(event_id=5), False),
        ("no-room-id", changed(room_id=_DROP), False),
        ("room-id-list", changed(room_id=["!r"]), False),
        ("no-sender", changed(sender=_DROP), False),
        ("sender-dict", changed(sender={"a": 1}), False),
        ("sender-bot", changed(sender="@mss_bot:hospital.test"), False),
        ("sender-ghost", changed(sender="@mss_a=b.fr:hospital.test"), False),
        ("type-unknown", changed(type="org.example.weird"), False),
        ("type-missing", changed(type=_DROP), False),
        ("type-list", changed(type=["m.room.message"]), False),
        ("type-state", changed(type="m.room.name", state_key=""), False),
        ("content-missing", changed(content=_DROP), True),
        ("content-not-dict", changed(content=[1, 2]), True),
        ("content-huge", changed(content={"body": "x" * 200_000}), True),
        ("member-content-list", changed(type="m.room.member", content=[1], state_key="@x"), False),
        (
            "member-invite-ghost",
            changed(
                type="m.room.member",
                content={"membership": "invite"},
                state_key="@mss_a=b.fr:hospital.test",
            ),
            True,
        ),
        (
            "member-invite-state-key-int",
            changed(type="m.room.member", content={"membership": "invite"}, state_key=5),
            False,
        ),
        ("redaction-no-redacts", changed(type="m.room.redaction", content={}), True),
        ("encrypted", changed(type="m.room.encrypted", content={"ciphertext": 5}), True),
    ]


_DROP = object()


# --------------------------------------------------------------------------- XML and XDM


def billion_laughs(levels: int = 9, root: str = "l") -> bytes:
    entities = '<!ENTITY a0 "ha">' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, levels + 1)
    )
    return (
        f'<?xml version="1.0"?><!DOCTYPE {root} [{entities}]><{root}>&a{levels};</{root}>'.encode()
    )


def hostile_xml() -> dict[str, bytes]:
    """XML documents every parser of received data must refuse (DTDs, entities, depth)."""
    return {
        "xxe-file": b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>',
        "xxe-http": b'<!DOCTYPE a [<!ENTITY x SYSTEM "http://127.0.0.1:9/x">]><a>&x;</a>',
        "xxe-in-attribute": b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a b="&x;"/>',
        "external-dtd": b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://127.0.0.1:9/x.dtd"><a/>',
        "external-dtd-public": b'<!DOCTYPE a PUBLIC "-//X//Y" "file:///etc/passwd"><a/>',
        "parameter-entity": (b'<!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]><a/>'),
        "parameter-entity-nested": (
            b"<!DOCTYPE a [<!ENTITY % q \"<!ENTITY &#x25; r SYSTEM 'file:///etc/passwd'>\">"
            b" %q; %r;]><a/>"
        ),
        "billion-laughs": billion_laughs(),
        "billion-laughs-attribute": billion_laughs().replace(b"<l>&a9;</l>", b'<l x="&a9;"/>'),
        "quadratic-blowup": (
            b'<!DOCTYPE a [<!ENTITY x "' + b"y" * 50_000 + b'">]><a>' + b"&x;" * 5000 + b"</a>"
        ),
        "internal-entity-only": b'<!DOCTYPE a [<!ENTITY x "hello">]><a>&x;</a>',
        "doctype-empty": b"<!DOCTYPE a><a/>",
        "undeclared-entity": b"<a>&undeclared;</a>",
        "deep-nesting": b"<a>" * 20_000 + b"</a>" * 20_000,
        "utf7-declaration": b'<?xml version="1.0" encoding="UTF-7"?><a>+ADw-b+AD4-</a>',
        "bogus-encoding": b'<?xml version="1.0" encoding="x-bogus"?><a/>',
        "xinclude": (
            b'<a xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file:///etc/passwd"'
            b' parse="text"/></a>'
        ),
        "empty": b"",
        "nul": b"<a>\x00</a>",
        "truncated": b"<a><b>",
    }


# Of those, the ones that are well-formed XML with no DOCTYPE: a parser may accept them, but must
# never fetch or expand anything.
WELL_FORMED_WITHOUT_DTD = frozenset({"xinclude", "deep-nesting"})


@cache
def good_package() -> tuple[bytes, bytes]:
    """A valid IHE_XDM.ZIP built by the bridge itself, and its CDA document."""
    from mssbridge.cda.document import build_cda
    from mssbridge.cda.sample import sample_request, sample_submission
    from mssbridge.cda.xdm import build_xdm

    request = sample_request(2)
    cda = build_cda(request, b"%PDF-1.4\n% conserve\n%%EOF\n")
    return build_xdm([cda], sample_submission(request)), cda


METADATA = "IHE_XDM/SUBSET01/METADATA.XML"
DOCUMENT = "IHE_XDM/SUBSET01/DOC0001.XML"


def entries_of(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rezip(
    entries: dict[str, bytes],
    method: int = zipfile.ZIP_DEFLATED,
    modes: dict[str, int] | None = None,
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, (2025, 1, 1, 0, 0, 0))
            info.compress_type = method
            if modes and name in modes:
                info.create_system = 3
                info.external_attr = modes[name] << 16
            archive.writestr(info, data)
    return buffer.getvalue()


def with_document(document: bytes, uri: str = "DOC0001.XML", mime: str = "text/xml") -> bytes:
    """The good package with its document replaced, METADATA.XML's hash and size kept true."""
    package, cda = good_package()
    entries = entries_of(package)
    metadata = entries.pop(METADATA)
    del entries[DOCUMENT]
    metadata = (
        metadata.replace(
            hashlib.sha1(cda).hexdigest().encode(), hashlib.sha1(document).hexdigest().encode()
        )
        .replace(f">{len(cda)}<".encode(), f">{len(document)}<".encode())
        .replace(b">DOC0001.XML<", f">{uri}<".encode())
        .replace(b'mimeType="text/xml"', f'mimeType="{mime}"'.encode())
    )
    entries[METADATA] = metadata
    entries[f"IHE_XDM/SUBSET01/{uri}"] = document
    return rezip(entries)


def with_metadata(metadata: bytes) -> bytes:
    entries = entries_of(good_package()[0])
    entries[METADATA] = metadata
    return rezip(entries)


def patch_sizes(data: bytes, name: bytes, declared: int) -> bytes:
    """Make both headers of the entry ``name`` declare ``declared`` uncompressed bytes."""
    out = bytearray(data)
    # (signature, offset of the uncompressed size, of the name length, of the name)
    layouts = ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46))
    for signature, size_at, length_at, name_at in layouts:
        start = 0
        while (start := out.find(signature, start)) >= 0:
            length = struct.unpack_from("<H", out, start + length_at)[0]
            if bytes(out[start + name_at : start + name_at + length]) == name:
                struct.pack_into("<I", out, start + size_at, declared)
            start += 4
    return bytes(out)


def overlapping_entries(copies: int) -> bytes:
    """Many central-directory records pointing at one compressed stream."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(METADATA, b"\0" * 100_000)
    raw = buffer.getvalue()
    central = raw.index(b"PK\x01\x02")
    end = raw.index(b"PK\x05\x06")
    record = raw[central:end]
    records = b"".join(
        record.replace(METADATA.encode(), f"IHE_XDM/SUB{i:05d}/METADATA.XML".encode())
        for i in range(copies)
    )
    eocd = bytearray(raw[end:])
    struct.pack_into("<HHII", eocd, 8, copies, copies, len(records), central)
    return raw[:central] + records + bytes(eocd)


@dataclass(frozen=True)
class XdmCase:
    """An archive, the limits to read it with, and the outcome: "refused" or "accepted"."""

    name: str
    data: bytes
    outcome: str
    limits: dict[str, int] | None = None


@cache
def xdm_cases() -> tuple[XdmCase, ...]:
    package, cda = good_package()
    good = entries_of(package)
    metadata = good[METADATA]
    cases = [XdmCase("good", package, "accepted")]
    for name, xml in hostile_xml().items():
        # XInclude is never processed: such metadata is read as naming no document.
        outcome = "accepted" if name == "xinclude" else "refused"
        cases.append(XdmCase(f"metadata-{name}", with_metadata(xml), outcome))
        doc_outcome = (
            "accepted" if name in WELL_FORMED_WITHOUT_DTD and name != "deep-nesting" else "refused"
        )
        cases.append(XdmCase(f"cda-{name}", with_document(xml), doc_outcome))
    # CDA with entities hidden inside an otherwise valid document.
    header = b"<?xml version='1.0' encoding='UTF-8'?>"
    for name, xml in (
        ("xxe", hostile_xml()["xxe-file"]),
        ("laughs", billion_laughs(root="ClinicalDocument")),
    ):
        doctype = xml[xml.index(b"<!DOCTYPE") : xml.index(b"]>") + 2]
        doctype = doctype.replace(b"DOCTYPE a ", b"DOCTYPE ClinicalDocument ")
        cases.append(
            XdmCase(
                f"cda-inline-{name}",
                with_document(cda.replace(header, header + doctype)),
                "refused",
            )
        )
    bomb = b"\0" * (4 * 1024 * 1024)
    traversal = {
        "dotdot": "IHE_XDM/../../etc/passwd",
        "dotdot-start": "../x",
        "dot": "IHE_XDM/./SUBSET01/x",
        "absolute": "/etc/passwd",
        "backslash": "IHE_XDM\\..\\x",
        "backslash-only": "..\\..\\x",
        "drive": "C:/x",
        "drive-rel": "C:x",
        "nul": "IHE_XDM/a\x00b",
        "newline": "IHE_XDM/a\nb",
        "empty-segment": "IHE_XDM//x",
        "overlong": "IHE_XDM/" + "a" * 300,
        "dotdot-end": "IHE_XDM/SUBSET01/..",
    }
    for name, path in traversal.items():
        # zipfile itself cuts entry names at a NUL: that entry is the harmless "IHE_XDM/a".
        outcome = "accepted" if name == "nul" else "refused"
        cases.append(XdmCase(f"path-{name}", rezip({**good, path: b"x"}), outcome))
        uri_metadata = metadata.replace(b">DOC0001.XML<", f">{path}<".encode())
        cases.append(XdmCase(f"uri-{name}", with_metadata(uri_metadata), "refused"))
    cases += [
        XdmCase(
            "uri-url",
            with_metadata(metadata.replace(b">DOC0001.XML<", b">file:///etc/passwd<")),
            "refused",
        ),
        XdmCase("uri-empty", with_metadata(metadata.replace(b">DOC0001.XML<", b"><")), "refused"),
        XdmCase(
            "uri-missing-file",
            with_metadata(metadata.replace(b">DOC0001.XML<", b">NOPE.XML<")),
            "refused",
        ),
        XdmCase(
            "symlink-entry",
            rezip(
                {**good, "IHE_XDM/SUBSET01/LINK": b"/etc/passwd"},
                modes={"IHE_XDM/SUBSET01/LINK": stat.S_IFLNK | 0o777},
            ),
            "refused",
        ),
        XdmCase("symlink-document", rezip(good, modes={DOCUMENT: stat.S_IFLNK | 0o777}), "refused"),
        XdmCase("device-entry", rezip(good, modes={DOCUMENT: stat.S_IFCHR | 0o666}), "refused"),
        XdmCase("bomb-ratio", rezip({**good, "IHE_XDM/SUBSET01/PAD.BIN": bomb}), "refused"),
        XdmCase(
            "bomb-ratio-metadata", with_metadata(metadata + b" " * (2 * 1024 * 1024)), "refused"
        ),
        XdmCase(
            "bomb-nested-zip-as-pdf",
            with_document(rezip({"inner.bin": bomb}), "DOC0001.ZIP", "application/zip"),
            "accepted",
        ),
        XdmCase("bomb-nested-zip-as-xml", with_document(rezip({"inner.bin": bomb})), "refused"),
        XdmCase("bomb-total", package, "refused", {"max_total_uncompressed": 1000}),
        XdmCase("bomb-entry-size", package, "refused", {"max_entry_uncompressed": 1000}),
        XdmCase("bomb-overlapping", overlapping_entries(150), "refused"),
        XdmCase(
            "many-entries",
            rezip({**good, **{f"IHE_XDM/F{i:05d}": b"" for i in range(1000)}}),
            "refused",
        ),
        XdmCase("many-documents", package, "refused", {"max_documents": 0}),
        XdmCase("archive-too-large", package, "refused", {"max_archive_bytes": 100}),
        XdmCase("metadata-too-large", package, "refused", {"max_metadata_bytes": 10}),
        XdmCase("lying-size-small", patch_sizes(package, DOCUMENT.encode(), 10), "refused"),
        XdmCase(
            "lying-size-large", patch_sizes(package, DOCUMENT.encode(), len(cda) + 1000), "refused"
        ),
        XdmCase("lying-size-zero", patch_sizes(package, METADATA.encode(), 0), "refused"),
        XdmCase("zero-byte-archive", b"", "refused"),
        XdmCase("zero-byte-metadata", with_metadata(b""), "refused"),
        XdmCase("zero-byte-cda", with_document(b""), "refused"),
        XdmCase("zero-byte-pdf", with_document(b"", "DOC0001.PDF", "application/pdf"), "accepted"),
        XdmCase(
            "oversized-document",
            with_document(b"%PDF" + b"\x00\xff" * 600_000, "DOC0001.PDF", "application/pdf"),
            "refused",
            {"max_entry_uncompressed": 1_000_000},
        ),
        XdmCase("stored-not-deflated", rezip(good, zipfile.ZIP_STORED), "accepted"),
        XdmCase("bzip2-method", rezip(good, zipfile.ZIP_BZIP2), "refused"),
        XdmCase("lzma-method", rezip(good, zipfile.ZIP_LZMA), "refused"),
        XdmCase("duplicate-case", rezip({**good, DOCUMENT.lower(): b"x"}), "refused"),
        XdmCase("no-metadata", rezip({k: v for k, v in good.items() if k != METADATA}), "refused"),
        XdmCase("metadata-wrong-depth", rezip({"METADATA.XML": metadata}), "refused"),
        XdmCase(
            "hash-mismatch",
            with_metadata(metadata.replace(hashlib.sha1(cda).hexdigest().encode(), b"0" * 40)),
            "refused",
        ),
        XdmCase(
            "size-mismatch",
            with_metadata(metadata.replace(f">{len(cda)}<".encode(), b">1<")),
            "refused",
        ),
        XdmCase("not-a-zip", b"PK\x03\x04" + b"\x00" * 100, "refused"),
        XdmCase(
            "zip-comment-huge", package[:-2] + struct.pack("<H", 65535) + b"c" * 65535, "accepted"
        ),
        XdmCase("encrypted-flag", _set_flag(package, 0x1), "refused"),
        # Found by tests/fuzz/fuzz_xdm.py: zipfile raises NotImplementedError for these.
        XdmCase("zip-version-unsupported", _set_version_needed(package, 255), "refused"),
    ]
    for cut in (10, 100, len(package) // 2, len(package) - 30, len(package) - 1):
        cases.append(XdmCase(f"truncated-{cut}", package[:cut], "refused"))
    rng = random.Random(7)
    for index in range(40):
        cases.append(XdmCase(f"mutation-{index:02d}", _mutate_zip(package, rng), "either"))
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return tuple(cases)


def _set_flag(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            flags = struct.unpack_from("<H", out, start + offset)[0]
            struct.pack_into("<H", out, start + offset, flags | bit)
            start += 4
    return bytes(out)


def _set_version_needed(data: bytes, version: int) -> bytes:
    """Claim that extracting every entry needs zip ``version`` (×10: 255 is 25.5)."""
    out = bytearray(data)
    start = 0
    while (start := out.find(b"PK\x01\x02", start)) >= 0:
        struct.pack_into("<H", out, start + 6, version)
        start += 4
    return bytes(out)


def _mutate_zip(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        where = rng.randrange(len(out))
        out[where] = rng.randrange(256)
    return bytes(out)


def xdm_seeds() -> list[bytes]:
    return [case.data for case in xdm_cases() if len(case.data) < 200_000][:60]


SEARCH_SECRET = re.compile(rb"root:|/bin/(?:ba)?sh")
