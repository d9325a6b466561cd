"""Message-IDs, References and reply subjects."""

from __future__ import annotations

import re

import pytest

from mssbridge.convert.threading import (
    conversation_message_id,
    is_own_message_id,
    message_id_for_event,
    parse_message_ids,
    references_for,
    reply_subject,
    thread_keys,
)
from mssbridge.model import InboundMail

DOMAIN = "hopital-test.mssante.fr"
EVENT_ID = "$Vh3Zq9cXyK1abcDEF:matrix.hopital-test.fr"


def test_message_id_for_event_is_opaque_and_deterministic() -> None:
    message_id = message_id_for_event(EVENT_ID, DOMAIN)
    assert message_id == message_id_for_event(EVENT_ID, DOMAIN)
    assert re.fullmatch(r"<[a-z2-7]{32}@hopital-test\.mssante\.fr>", message_id)
    assert "matrix" not in message_id and "Vh3Zq9" not in message_id
    assert message_id != message_id_for_event(EVENT_ID + "x", DOMAIN)


def test_conversation_and_event_ids_never_collide() -> None:
    assert conversation_message_id("key-1", DOMAIN) != message_id_for_event("key-1", DOMAIN)
    assert conversation_message_id("key-1", DOMAIN) == conversation_message_id("key-1", DOMAIN)
    assert is_own_message_id(conversation_message_id("key-1", DOMAIN), DOMAIN)


@pytest.mark.parametrize(
    ("message_id", "own"),
    [
        (message_id_for_event(EVENT_ID, DOMAIN), True),
        (message_id_for_event(EVENT_ID, "other.mssante.fr"), False),
        ("<abc@hopital-test.mssante.fr>", False),
        ("<" + "a" * 32 + "@HOPITAL-TEST.mssante.fr>", True),
        ("<" + "a" * 33 + "@hopital-test.mssante.fr>", False),
        ("junk", False),
    ],
)
def test_is_own_message_id(message_id: str, own: bool) -> None:
    assert is_own_message_id(message_id, DOMAIN) is own


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        (None, ()),
        ("", ()),
        ("<a@b>", ("<a@b>",)),
        ("<a@b> <c@d>\r\n <a@b>", ("<a@b>", "<c@d>")),
        ("(comment) <a@b> junk <c@d", ("<a@b>",)),
        ('"Dr X" <a@b> <c@d>', ("<a@b>", "<c@d>")),
        ("a@b", ("<a@b>",)),
        ("no id here", ()),
        ("<no-at-sign>", ("<no-at-sign>",)),
    ],
)
def test_parse_message_ids(value: str | None, ids: tuple[str, ...]) -> None:
    assert parse_message_ids(value) == ids


def _mail(in_reply_to: tuple[str, ...], references: tuple[str, ...]) -> InboundMail:
    return InboundMail(
        message_id="<m@x>",
        sender_address="a@b.fr",
        sender_name="",
        subject="",
        date=None,
        in_reply_to=in_reply_to,
        references=references,
    )


@pytest.mark.parametrize(
    ("in_reply_to", "references", "keys"),
    [
        ((), (), []),
        (("<p@x>",), ("<r@x>", "<q@x>", "<p@x>"), ["<p@x>", "<q@x>", "<r@x>"]),
        ((), ("<r@x>", "<q@x>"), ["<q@x>", "<r@x>"]),
        (("<p@x>",), (), ["<p@x>"]),
    ],
)
def test_thread_keys_most_specific_first(
    in_reply_to: tuple[str, ...], references: tuple[str, ...], keys: list[str]
) -> None:
    assert thread_keys(_mail(in_reply_to, references)) == keys


@pytest.mark.parametrize(
    ("parent_refs", "parent_id", "limit", "expected"),
    [
        ((), None, 20, ()),
        ((), "<p>", 20, ("<p>",)),
        (("<r>", "<a>"), "<p>", 20, ("<r>", "<a>", "<p>")),
        (("<r>", "<p>"), "<p>", 20, ("<r>", "<p>")),
        (("<r>", "<a>", "<b>", "<c>"), "<p>", 3, ("<r>", "<c>", "<p>")),
        (("<r>", "<a>"), "<p>", 1, ("<p>",)),
    ],
)
def test_references_for(
    parent_refs: tuple[str, ...], parent_id: str | None, limit: int, expected: tuple[str, ...]
) -> None:
    assert references_for(parent_refs, parent_id, limit) == expected


def test_references_for_keeps_root_and_limit() -> None:
    refs = tuple(f"<{i}@x>" for i in range(50))
    result = references_for(refs, "<p@x>")
    assert len(result) == 20
    assert result[0] == "<0@x>" and result[-1] == "<p@x>" and result[-2] == "<49@x>"


def test_references_for_refuses_zero_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        references_for((), "<p>", 0)


@pytest.mark.parametrize(
    ("subject", "reply"),
    [
        ("Avis cardiologique", "Re: Avis cardiologique"),
        ("Re: Avis", "Re: Avis"),
        ("RE: Avis", "Re: Avis"),
        ("Re : Avis", "Re: Avis"),
        ("RE: RE: Re: Avis", "Re: Avis"),
        ("Réf: Avis", "Re: Avis"),
        ("Re[2]: Avis", "Re: Avis"),
        ("AW: Befund", "Re: Befund"),
        ("TR: Résultats", "Re: TR: Résultats"),
        ("Fwd: Résultats", "Re: Fwd: Résultats"),
        ("Re: TR: Résultats", "Re: TR: Résultats"),
        ("Rennes: réunion", "Re: Rennes: réunion"),
        ("Retour de bloc", "Re: Retour de bloc"),
        ("", "Re:"),
    ],
)
def test_reply_subject(subject: str, reply: str) -> None:
    assert reply_subject(subject) == reply
