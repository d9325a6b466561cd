"""The at-rest keyring: several keys in one file, newest first, picked up by a running sealer."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from mssbridge.errors import ConfigError
from mssbridge.security.atrest import (
    Sealer,
    SealError,
    blob_key_id,
    key_id_of,
    load_key,
    load_keyring,
    new_key_file,
    write_keyring,
)


def test_one_line_files_still_load(tmp_path: Path) -> None:
    new_key_file(tmp_path / "k")
    assert load_keyring(tmp_path / "k") == [load_key(tmp_path / "k")]


def test_keyring_seals_with_the_newest_and_opens_with_all(tmp_path: Path) -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    old_blob = Sealer(old).seal(b"ancien", b"aad")
    write_keyring(tmp_path / "k", [new, old])
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    sealer = Sealer.from_file(tmp_path / "k")
    assert sealer.open(old_blob, b"aad") == b"ancien"
    new_blob = sealer.seal(b"nouveau", b"aad")
    assert blob_key_id(new_blob) == key_id_of(new) == sealer.key_id
    with pytest.raises(SealError, match="another key"):
        Sealer(old).open(new_blob, b"aad")  # the old key alone cannot open new blobs


def test_running_sealer_follows_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    new_key_file(path)
    sealer = Sealer.from_file(path)
    first = sealer.key_id
    rotated = secrets.token_bytes(32)
    write_keyring(path, [rotated, *load_keyring(path)])
    # A blob of the new key is opened at once: the unknown key id triggers a reload ...
    assert sealer.open(Sealer(rotated).seal(b"x", b"a"), b"a") == b"x"
    # ... and sealing switches to the new key (here without waiting for the periodic check).
    assert blob_key_id(sealer.seal(b"y", b"a")) == key_id_of(rotated) != first


def test_periodic_reload_before_sealing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "k"
    new_key_file(path)
    sealer = Sealer.from_file(path)
    rotated = secrets.token_bytes(32)
    write_keyring(path, [rotated, *load_keyring(path)])
    monkeypatch.setattr(Sealer, "RELOAD_SECONDS", 0.0)
    assert blob_key_id(sealer.seal(b"y", b"a")) == key_id_of(rotated)


def test_bad_keyrings_are_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_text("mssbridge-key-v1:" + "A" * 44 + "\nmssbridge-key-v1:short\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="256-bit"):
        load_keyring(path)
    path.write_text("")
    with pytest.raises(ConfigError, match="not an mssbridge key file"):
        load_keyring(path)
    sealer = Sealer(secrets.token_bytes(32), source=tmp_path / "gone")
    with pytest.raises(SealError, match="another key"):
        sealer.open(Sealer(secrets.token_bytes(32)).seal(b"x", b"a"), b"a")
