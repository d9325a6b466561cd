"""Encryption at rest: AES-256-GCM sealing of message bodies and events kept in the store."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mssbridge.errors import ConfigError

_FORMAT = b"\x01"
_KEY_PREFIX = "mssbridge-key-v1:"
_NONCE_LEN = 12
_KEY_ID_LEN = 4


class SealError(Exception):
    """A sealed blob cannot be opened: wrong key, tampering or corruption."""


def _key_line(key: bytes) -> str:
    return _KEY_PREFIX + base64.b64encode(key).decode("ascii") + "\n"


def new_key_file(path: Path) -> None:
    """Write a fresh random 256-bit key, readable by the owner only; never overwrite."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(_key_line(secrets.token_bytes(32)))


def write_keyring(path: Path, keys: Sequence[bytes]) -> None:
    """Replace the key file atomically with these keys, newest (the sealing key) first."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write("".join(_key_line(key) for key in keys))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_keyring(path: Path) -> list[bytes]:
    """Read every key of the key file, newest first; refuse a missing, malformed or
    group/world-readable one."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError as exc:
        raise ConfigError(f"bridge.key_file: key file not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bridge.key_file: cannot read {path}: {exc}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"bridge.key_file: {path} must not be readable by others (chmod 600)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not all(line.startswith(_KEY_PREFIX) for line in lines):
        raise ConfigError(f"bridge.key_file: {path} is not an mssbridge key file")
    keys = []
    for line in lines:
        try:
            key = base64.b64decode(line[len(_KEY_PREFIX) :], validate=True)
        except ValueError as exc:
            raise ConfigError(f"bridge.key_file: {path} holds invalid base64") from exc
        if len(key) != 32:
            raise ConfigError(f"bridge.key_file: {path} must hold 256-bit keys")
        keys.append(key)
    return keys


def load_key(path: Path) -> bytes:
    """The sealing key of the key file (its first line)."""
    return load_keyring(path)[0]


def key_id_of(key: bytes) -> bytes:
    """The short id a sealed blob carries to name the key that sealed it."""
    return hashlib.sha256(key).digest()[:_KEY_ID_LEN]


def blob_key_id(blob: bytes) -> bytes | None:
    """The key id in a sealed blob's header, or None when it is not a sealed blob."""
    if len(blob) < len(_FORMAT) + _KEY_ID_LEN or blob[:1] != _FORMAT:
        return None
    return bytes(blob[1 : 1 + _KEY_ID_LEN])


class Sealer:
    """Seals with the newest key of a keyring and opens with any of them (AES-256-GCM).

    The AAD binds a blob to its row. A sealer made with ``from_file`` follows its key file:
    it re-reads it when a blob names an unknown key and at most every ``RELOAD_SECONDS``
    before sealing, so a running bridge picks up ``mssbridge keys rotate`` on its own.
    """

    RELOAD_SECONDS = 5.0

    def __init__(self, key: bytes, *previous: bytes, source: Path | None = None) -> None:
        self._source = source
        self._stamp: tuple[int, int] | None = None
        self._checked = time.monotonic()
        self._install([key, *previous])

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        keys = load_keyring(path)
        sealer = cls(*keys, source=path)
        sealer._stamp = _file_stamp(path)
        return sealer

    def _install(self, keys: Sequence[bytes]) -> None:
        self._keys = {key_id_of(key): key for key in reversed(keys)}
        self._current = keys[0]

    @property
    def key(self) -> bytes:
        return self._current

    @property
    def key_id(self) -> bytes:
        return key_id_of(self._current)

    @property
    def key_ids(self) -> frozenset[bytes]:
        return frozenset(self._keys)

    def reload(self) -> bool:
        """Re-read the key file when it changed; True when the keyring changed."""
        self._checked = time.monotonic()
        if self._source is None:
            return False
        try:
            stamp = _file_stamp(self._source)
        except OSError as exc:
            raise ConfigError(f"bridge.key_file: cannot read {self._source}: {exc}") from exc
        if stamp == self._stamp:
            return False
        keys = load_keyring(self._source)
        self._stamp = stamp
        changed = keys[0] != self._current or set(map(key_id_of, keys)) != set(self._keys)
        self._install(keys)
        return changed

    def _maybe_reload(self) -> None:
        if self._source is not None and time.monotonic() - self._checked >= self.RELOAD_SECONDS:
            # On a read error keep sealing with the keys in memory; opening will tell.
            with contextlib.suppress(ConfigError):
                self.reload()

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        self._maybe_reload()
        nonce = secrets.token_bytes(_NONCE_LEN)
        sealed = AESGCM(self._current).encrypt(nonce, plaintext, aad)
        return _FORMAT + self.key_id + nonce + sealed

    def open(self, blob: bytes, aad: bytes) -> bytes:
        header = len(_FORMAT) + _KEY_ID_LEN + _NONCE_LEN
        key_id = blob_key_id(blob)
        if len(blob) < header or key_id is None:
            raise SealError("unknown sealed format")
        key = self._keys.get(key_id)
        if key is None and self._source is not None:
            try:
                self.reload()
            except ConfigError as exc:
                raise SealError(f"sealed with another key; {exc}") from exc
            key = self._keys.get(key_id)
        if key is None:
            raise SealError("sealed with another key")
        nonce = blob[1 + _KEY_ID_LEN : header]
        try:
            return AESGCM(key).decrypt(nonce, blob[header:], aad)
        except InvalidTag as exc:
            raise SealError("authentication tag mismatch") from exc


def _file_stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_ino
