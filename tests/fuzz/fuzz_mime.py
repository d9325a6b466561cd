"""Fuzz target: raw inbound mail → InboundMail → Matrix content (convert/mail_to_chat).

Run: ``python tests/fuzz/fuzz_mime.py -atheris_runs=100000`` (see docs/testing.md).
"""

from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_support import instrumented, main
from hostile_corpus import mime_seeds

with instrumented("mssbridge.convert", "email"):
    from mssbridge.convert.mail_to_chat import (
        MAX_SUBJECT,
        NO_SENDER,
        NOT_A_MAIL,
        attachment_content,
        chat_content,
        parse_mail,
    )
    from mssbridge.errors import MalformedInput

HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def check(data: bytes) -> None:
    try:
        mail = parse_mail(data)
    except MalformedInput as exc:
        if exc.user_message not in (NOT_A_MAIL, NO_SENDER):
            raise AssertionError(f"undocumented refusal {exc.code}") from None
        return
    for value, limit in ((mail.subject, MAX_SUBJECT), (mail.sender_name, 100)):
        if len(value) > limit or any(unicodedata.category(c) in HIDDEN for c in value):
            raise AssertionError(f"unsafe header text {value[:60]!r}")
    for attachment in mail.attachments:
        name = attachment.filename
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise AssertionError(f"unsafe file name {name!r}")
        attachment_content(attachment, "mxc://hospital.test/fuzz")
    content = chat_content(mail)
    if content is not None and "<script" in content.get("formatted_body", "").lower():
        raise AssertionError("script in formatted body")


if __name__ == "__main__":
    main(check, [seed for seed in mime_seeds() if len(seed) < 65536])
