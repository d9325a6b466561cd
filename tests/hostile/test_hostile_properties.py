"""Properties of the pure conversions under arbitrary input (hypothesis).

Extends tests/unit/test_address.py (address ⇄ localpart round trip) with the full ghost user
id, injectivity and arbitrary user ids; adds threading keys, text ⇄ HTML and file names.
"""

from __future__ import annotations

import re
import string

import pytest
from hostile_checks import assert_safe_filename, assert_safe_html
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mssbridge.convert.address import (
    MAX_USER_ID_LENGTH,
    address_from_user_id,
    address_to_localpart,
    ghost_user_id,
    normalize_address,
)
from mssbridge.convert.filenames import MAX_FILENAME_LENGTH, safe_filename
from mssbridge.convert.html import html_to_text, sanitize_html, text_to_html
from mssbridge.convert.threading import (
    conversation_message_id,
    is_own_message_id,
    message_id_for_event,
    parse_message_ids,
    references_for,
    reply_subject,
)

pytestmark = pytest.mark.timeout(120)

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PREFIX = "mss_"
SERVER = "matrix.hopital-test.fr"
DOMAIN = "hopital-test.mssante.fr"
USER_ID = re.compile(r"@[a-z0-9._=\-/+]+:[A-Za-z0-9.\-]+")

# --------------------------------------------------------------------------- ghost addresses

_local = st.text(
    st.sampled_from(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~.éàü\"\\ @"),
    min_size=1,
    max_size=20,
)
_label = st.text(st.sampled_from("abcXYZ019-"), min_size=1, max_size=8)
_domain = st.lists(_label, min_size=2, max_size=3).map(".".join)


def _address(local: str, domain: str) -> str | None:
    for candidate in (
        f"{local}@{domain}",
        '"' + local.replace("\\", "\\\\").replace('"', '\\"') + f'"@{domain}',
    ):
        try:
            return normalize_address(candidate)
        except ValueError:
            continue
    return None


@FAST
@given(local=_local, domain=_domain)
def test_ghost_user_id_round_trips_or_refuses(local: str, domain: str) -> None:
    address = _address(local, domain)
    if address is None:
        return
    try:
        user_id = ghost_user_id(address, PREFIX, SERVER)
    except ValueError:
        assert len(f"@{address_to_localpart(address, PREFIX)}:{SERVER}") > MAX_USER_ID_LENGTH
        return
    assert USER_ID.fullmatch(user_id) and len(user_id.encode()) <= MAX_USER_ID_LENGTH
    assert address_from_user_id(user_id, PREFIX, SERVER) == address
    # The domain's case never makes a second ghost.
    assert ghost_user_id(_address(local, domain.upper()) or address, PREFIX, SERVER) == user_id


@FAST
@given(st.lists(st.tuples(_local, _domain), min_size=2, max_size=6))
def test_distinct_addresses_get_distinct_ghosts(pairs: list[tuple[str, str]]) -> None:
    addresses = {a for local, domain in pairs if (a := _address(local, domain)) is not None}
    localparts = {address_to_localpart(address, PREFIX) for address in addresses}
    assert len(localparts) == len(addresses)


@FAST
@given(st.text(max_size=80))
def test_any_user_id_is_a_ghost_or_not_never_an_error(text: str) -> None:
    for user_id in (text, f"@{PREFIX}{text}:{SERVER}", f"@{text}:{SERVER}"):
        address = address_from_user_id(user_id, PREFIX, SERVER)
        if address is not None:
            assert ghost_user_id(address, PREFIX, SERVER) == user_id


# --------------------------------------------------------------------------- threading keys

_event_id = st.text(min_size=1, max_size=60).map(lambda text: "$" + text)
_message_id = st.builds(
    "<{}@{}>".format,
    st.text(
        st.sampled_from(string.ascii_letters + string.digits + ".$_+-"), min_size=1, max_size=8
    ),
    st.sampled_from(["a.fr", "chu-test.mssante.fr", "x"]),
)


@FAST
@given(st.lists(_event_id, min_size=1, max_size=20, unique=True))
def test_event_message_ids_are_stable_unique_and_own(event_ids: list[str]) -> None:
    ids = [message_id_for_event(event_id, DOMAIN) for event_id in event_ids]
    assert ids == [message_id_for_event(event_id, DOMAIN) for event_id in event_ids]
    assert len(set(ids)) == len(ids)
    for event_id, message_id in zip(event_ids, ids, strict=True):
        assert parse_message_ids(message_id) == (message_id,)
        assert is_own_message_id(message_id, DOMAIN)
        assert not is_own_message_id(message_id, "autre.mssante.fr")
        assert message_id != conversation_message_id(event_id, DOMAIN)
        assert message_id.isascii() and len(message_id) < 100


@FAST
@given(
    st.lists(_message_id, max_size=40),
    st.one_of(st.none(), _message_id),
    st.integers(min_value=1, max_value=25),
)
def test_references_chain(parents: list[str], parent: str | None, limit: int) -> None:
    earlier = [ref for ref in parents if ref != parent]
    chain = list(dict.fromkeys([*earlier, *([parent] if parent else [])]))
    refs = references_for(parents, parent, limit)
    assert len(refs) == min(len(chain), limit)
    assert len(set(refs)) == len(refs)
    assert [ref for ref in chain if ref in refs] == list(refs)  # order kept
    if parent is not None:
        assert refs[-1] == parent
    if chain and limit >= 2:
        assert refs[0] == chain[0]  # the thread root survives shortening
    assert parse_message_ids(" ".join(refs)) == refs


@FAST
@given(st.text(max_size=60))
def test_reply_subject_is_idempotent(subject: str) -> None:
    once = reply_subject(subject)
    assert once.startswith("Re:") and reply_subject(once) == once


# --------------------------------------------------------------------------- text and HTML

_texty = st.text(
    st.characters(blacklist_categories=("Cs",)) | st.sampled_from("<>&\"'\n\r\t ;#/=."),
    max_size=200,
)


@FAST
@given(_texty)
def test_plain_text_survives_html_and_back(text: str) -> None:
    back = html_to_text(text_to_html(text))
    assert back.split() == text.replace("\xa0", " ").split()


_HOSTILE_FRAGMENTS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href=" JaVaScRiPt:alert(1)">x</a>',
    '<a href="data:text/html,<script>x</script>">x</a>',
    '<a href="vbscript:x">x</a>',
    '<a href="//evil.example/x">x</a>',
    '<div onclick="x()" style="background:url(javascript:x)">x</div>',
    '<svg onload="x()"><script>x</script></svg>',
    '<math><mi xlink:href="javascript:x">x</mi></math>',
    '<iframe src="https://evil.example"></iframe>',
    "<style>@import 'x';</style>",
    '<form action="x"><input autofocus onfocus="x()"></form>',
    '<object data="x"></object><embed src="x">',
    "<!--<script>x</script>-->",
    "<![CDATA[<script>x</script>]]>",
    '<font color="red" onmouseover="x()">x</font>',
    '<span data-mx-color="#fff" data-mx-spoiler="y" onmouseover="x">x</span>',
    '<code class="language-js onload=x">x</code>',
    "<scr<script>ipt>alert(1)</script>",
    '<a href="https://ok.example" target="_blank" rel="opener">ok</a>',
    "<mx-reply><script>x</script></mx-reply>",
    "<b><i><u>",
    "</div></table>",
    "texte",
    " ",
    "&lt;script&gt;",
    '<p title="x" id="y" class="z">p</p>',
    '<ol start="99999999999" onclick="x"><li>x</li></ol>',
    '<base href="javascript:x//">',
    '<meta http-equiv="refresh" content="0;url=javascript:x">',
]


@FAST
@given(st.lists(st.sampled_from(_HOSTILE_FRAGMENTS) | st.text(max_size=10), max_size=25))
def test_sanitised_html_never_holds_scripts_or_handlers(fragments: list[str]) -> None:
    cleaned = sanitize_html("".join(fragments))
    assert_safe_html(cleaned)
    assert sanitize_html(cleaned) == cleaned  # a second pass finds nothing left to remove
    assert "<script" not in html_to_text(cleaned).lower() or "&lt;script" in "".join(fragments)


# --------------------------------------------------------------------------- file names

_content_types = st.sampled_from(
    ["application/pdf", "image/jpeg", "text/plain", "application/x-unknown", "x/y", ""]
)


@FAST
@given(st.one_of(st.none(), st.text(max_size=300)), _content_types, st.integers(1, 10_000))
def test_safe_filename_is_never_a_path_nor_empty(
    name: str | None, content_type: str, index: int
) -> None:
    safe = safe_filename(name, content_type, index)
    assert_safe_filename(safe)
    assert safe_filename(safe, content_type, index) == safe  # already safe: unchanged


@FAST
@given(
    st.text(st.sampled_from(string.ascii_letters + "/\\. _-é"), min_size=130, max_size=300),
    st.sampled_from([".pdf", ".docx", ".jpg"]),
)
def test_long_file_names_keep_their_extension(stem: str, extension: str) -> None:
    safe = safe_filename(stem + extension, "application/pdf", 1)
    assert len(safe) <= MAX_FILENAME_LENGTH
    last = re.split(r"[\\/]", stem + extension)[-1].strip(" .")
    if len(last) > MAX_FILENAME_LENGTH and last.endswith(extension):
        assert safe.endswith(extension)
