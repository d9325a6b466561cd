"""MSSanté addresses: validation, normalisation and the reversible ghost-user localpart escaping.

A correspondent ``local@domain`` is the Matrix ghost ``@<prefix><escaped>:<server_name>``.
Matrix localparts only allow ``a-z 0-9 . _ = - / +``, so the address is escaped:

- the address is first normalised (:func:`normalize_address`): the domain is lower-cased, a
  quoted local part is reduced to its canonical form, the local part keeps its case;
- ``@`` becomes ``=``;
- in the local part, ``a-z 0-9 . - + /`` stay as they are; every other character (``_``, ``=``,
  upper-case letters, the other specials, every byte of a non-ASCII character) becomes ``_``
  followed by the two lower-case hex digits of each of its UTF-8 bytes (``_`` → ``_5f``,
  ``A`` → ``_41``, ``é`` → ``_c3_a9``);
- the domain is escaped the same way: internationalised domains are kept in Unicode (not
  converted to punycode, so that the original form comes back) and their non-ASCII bytes escaped.

Example: ``dr.house@chu-test.mssante.fr`` → ``mss_dr.house=chu-test.mssante.fr``.
Decoding accepts only the canonical escaping, so every address has exactly one ghost.
"""

from __future__ import annotations

import re
import unicodedata

MAX_USER_ID_LENGTH = 255
"""Matrix user ids are at most 255 bytes, sigil and server name included."""

MAX_LOCAL_PART_OCTETS = 64
MAX_DOMAIN_OCTETS = 253
MAX_ADDRESS_OCTETS = 254

_KEPT_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789.-+/")
_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")
_ASCII_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_ESCAPED = re.compile(r"(?:[a-z0-9.+/-]|_[0-9a-f]{2})*")
_ESCAPE_TOKEN = re.compile(r"_([0-9a-f]{2})|(.)")


def normalize_address(address: str) -> str:
    """Return the canonical form of an addr-spec, or raise ValueError saying what is wrong."""
    if not isinstance(address, str):
        raise ValueError("address must be a string")
    text = address.strip()
    if not text:
        raise ValueError("empty address")
    local, domain = _split_address(text)
    canonical = f"{_normalize_local(local)}@{_normalize_domain(domain)}"
    if len(canonical.encode("utf-8")) > MAX_ADDRESS_OCTETS:
        raise ValueError(f"address longer than {MAX_ADDRESS_OCTETS} octets")
    return canonical


def address_to_localpart(address: str, prefix: str) -> str:
    """Return the ghost localpart of an address; raise ValueError when it is not valid."""
    local, _, domain = normalize_address(address).rpartition("@")
    return f"{prefix}{_escape(local)}={_escape(domain)}"


def localpart_to_address(localpart: str, prefix: str) -> str | None:
    """Return the address a ghost localpart stands for, or None when it is not one of ours."""
    if not localpart.startswith(prefix):
        return None
    escaped = localpart[len(prefix) :]
    local_part, sep, domain_part = escaped.partition("=")
    if not sep or "=" in domain_part:
        return None
    local, domain = _unescape(local_part), _unescape(domain_part)
    if local is None or domain is None:
        return None
    try:
        address = normalize_address(f"{local}@{domain}")
    except ValueError:
        return None
    if address_to_localpart(address, prefix) != localpart:
        return None  # not the canonical escaping: refuse aliases of the same address
    return address


def ghost_user_id(address: str, prefix: str, server_name: str) -> str:
    """Return the Matrix user id of a correspondent's ghost; ValueError if invalid or too long."""
    user_id = f"@{address_to_localpart(address, prefix)}:{server_name}"
    if len(user_id.encode("utf-8")) > MAX_USER_ID_LENGTH:
        raise ValueError(f"ghost user id would exceed {MAX_USER_ID_LENGTH} bytes")
    return user_id


def address_from_user_id(user_id: str, prefix: str, server_name: str) -> str | None:
    """Return the address behind a ghost user id, or None when it is not one of our ghosts."""
    suffix = f":{server_name}"
    if not user_id.startswith("@") or not user_id.endswith(suffix):
        return None
    return localpart_to_address(user_id[1 : -len(suffix)], prefix)


def parse_address_list(text: str) -> tuple[str, ...]:
    """Split a user-typed list (commas, semicolons, spaces; ``Name <addr>`` allowed).

    Returns the normalised addresses without duplicates, in order; raises ValueError naming the
    first entry that is not an address.
    """
    result: list[str] = []
    for entry in _split_entries(text):
        for candidate in _entry_addresses(entry):
            try:
                address = normalize_address(candidate)
            except ValueError as exc:
                raise ValueError(f"{candidate!r}: {exc}") from None
            if address not in result:
                result.append(address)
    return tuple(result)


def _split_address(text: str) -> tuple[str, str]:
    if text.startswith('"'):
        end = _closing_quote(text)
        if end + 1 >= len(text) or text[end + 1] != "@":
            raise ValueError("a quoted local part must be followed by '@'")
        return text[: end + 1], text[end + 2 :]
    local, sep, domain = text.rpartition("@")
    if not sep:
        raise ValueError("missing '@'")
    return local, domain


def _closing_quote(text: str) -> int:
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == '"':
            return index
        index += 1
    raise ValueError("unterminated quoted local part")


def _normalize_local(local: str) -> str:
    if not local:
        raise ValueError("empty local part")
    value = _unquote(local) if local.startswith('"') else local
    if not value:
        raise ValueError("empty quoted local part")
    if not local.startswith('"') and not _is_dot_atom(value):
        raise ValueError("local part has forbidden characters or misplaced dots")
    canonical = value if _is_dot_atom(value) else _quote(value)
    if len(canonical.encode("utf-8")) > MAX_LOCAL_PART_OCTETS:
        raise ValueError(f"local part longer than {MAX_LOCAL_PART_OCTETS} octets")
    return canonical


def _unquote(quoted: str) -> str:
    inner = quoted[1:-1]
    chars: list[str] = []
    escaped = False
    for char in inner:
        if escaped:
            chars.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        else:
            chars.append(char)
    for char in chars:
        if not _is_quoted_char(char):
            raise ValueError("quoted local part has a control or invalid character")
    return "".join(chars)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _is_quoted_char(char: str) -> bool:
    code = ord(char)
    if code < 128:
        return 32 <= code <= 126
    return _is_utf8_text(char)


def _is_dot_atom(value: str) -> bool:
    atoms = value.split(".")
    return all(atoms) and all(_is_atext(char) for atom in atoms for char in atom)


def _is_atext(char: str) -> bool:
    if char.isascii():
        return char.isalnum() or char in _ATEXT_SPECIALS
    return _is_utf8_text(char) and not char.isspace()


def _is_utf8_text(char: str) -> bool:
    """A non-ASCII character allowed by RFC 6532: encodable, not a control or format char."""
    return unicodedata.category(char) not in {"Cc", "Cs", "Cf", "Zl", "Zp", "Co", "Cn"}


def _normalize_domain(domain: str) -> str:
    if not domain:
        raise ValueError("empty domain")
    lowered = unicodedata.normalize("NFC", domain.lower())
    if len(lowered.encode("utf-8")) > MAX_DOMAIN_OCTETS:
        raise ValueError(f"domain longer than {MAX_DOMAIN_OCTETS} octets")
    labels = lowered.split(".")
    if len(labels) < 2:
        raise ValueError("domain must have at least two labels")
    for label in labels:
        _check_label(label)
    return lowered


def _check_label(label: str) -> None:
    if label.isascii():
        if not _ASCII_LABEL.fullmatch(label):
            raise ValueError(f"invalid domain label {label!r}")
        return
    if len(label.encode("utf-8")) > 63 or label.startswith("-") or label.endswith("-"):
        raise ValueError("invalid internationalised domain label")
    if not all(char == "-" or char.isalnum() for char in label):
        raise ValueError("invalid character in internationalised domain label")


def _escape(text: str) -> str:
    return "".join(
        chr(byte) if byte in _KEPT_BYTES else f"_{byte:02x}" for byte in text.encode("utf-8")
    )


def _unescape(text: str) -> str | None:
    if not _ESCAPED.fullmatch(text):
        return None
    data = bytearray()
    for match in _ESCAPE_TOKEN.finditer(text):
        pair, plain = match.groups()
        data += bytes.fromhex(pair) if pair else plain.encode("ascii")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split_entries(text: str) -> list[str]:
    entries: list[str] = []
    current: list[str] = []
    quoted = angled = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angled = True
        elif char == ">" and not quoted:
            angled = False
        elif char in ",;" and not quoted and not angled:
            entries.append("".join(current))
            current = []
            continue
        current.append(char)
    entries.append("".join(current))
    return [entry.strip() for entry in entries if entry.strip()]


def _entry_addresses(entry: str) -> list[str]:
    if entry.endswith(">") and "<" in entry:
        return [entry[entry.rindex("<") + 1 : -1]]
    if entry.startswith('"'):
        return [entry]
    return entry.split()
