"""At-rest sealing: round trip, wrong key, tampering, and the key file's permissions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mssbridge.errors import ConfigError
from mssbridge.security.atrest import Sealer, SealError, load_key, new_key_file


def test_seal_round_trip_and_binding(tmp_path: Path) -> None:
    new_key_file(tmp_path / "k")
    sealer = Sealer(load_key(tmp_path / "k"))
    blob = sealer.seal(b"compte rendu", b"inbox:1")
    assert b"compte rendu" not in blob
    assert sealer.open(blob, b"inbox:1") == b"compte rendu"
    with pytest.raises(SealError):
        sealer.open(blob, b"inbox:2")  # a blob moved to another row does not open


def test_wrong_key_and_tampering_are_refused(tmp_path: Path) -> None:
    new_key_file(tmp_path / "a")
    new_key_file(tmp_path / "b")
    blob = Sealer(load_key(tmp_path / "a")).seal(b"x" * 100, b"aad")
    with pytest.raises(SealError, match="another key"):
        Sealer(load_key(tmp_path / "b")).open(blob, b"aad")
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SealError, match="tag"):
        Sealer(load_key(tmp_path / "a")).open(tampered, b"aad")


def test_key_file_rules(tmp_path: Path) -> None:
    path = tmp_path / "k"
    new_key_file(path)
    with pytest.raises(FileExistsError):
        new_key_file(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(path)
    with pytest.raises(ConfigError, match="not found"):
        load_key(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_text("hello\n")
    os.chmod(bad, 0o600)
    with pytest.raises(ConfigError, match="not an mssbridge key"):
        load_key(bad)
