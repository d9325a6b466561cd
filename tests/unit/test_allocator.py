"""The allocator setting for large blocks: applied on Linux, an operator's own left alone."""

from __future__ import annotations

import sys

import pytest

from mssbridge.allocator import THRESHOLD_ENV, return_large_blocks


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc setting")
def test_applied_on_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THRESHOLD_ENV, raising=False)
    assert return_large_blocks() is True


def test_an_operators_threshold_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(THRESHOLD_ENV, "1048576")
    assert return_large_blocks() is False
