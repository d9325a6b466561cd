"""`mssbridge check` against the real homeserver and mail servers: one clear line per check."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from conftest import BridgeProcess, World

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def run_check(config: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mssbridge", "check", "--config", config],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_check_passes_against_the_lab(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    bridge = bridge_factory()
    result = run_check(str(bridge.config))
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stdout + result.stderr
    names = [
        "config",
        "at-rest key",
        "certificates",
        "database",
        "whitelist",
        "homeserver",
        "smtp submission",
        "imap",
    ]
    for name in names:
        assert any(line.startswith("ok") and name in line for line in lines), (name, lines)
    assert any("TLSv1.3" in line or "TLSv1.2" in line for line in lines)


def test_check_names_what_fails(
    world: World, synapse_lab: Any, bridge_factory: Callable[..., BridgeProcess]
) -> None:
    rogue = world.pki.rogue_client
    bridge = bridge_factory(
        extra=(
            f"tls.cert_file={rogue.chain}",
            f"tls.key_file={rogue.key}",
            "matrix.as_token=not-the-token",
        ),
    )
    result = run_check(str(bridge.config))
    assert result.returncode == 1
    failed = {
        line.split(":", 1)[0].split(None, 1)[1]
        for line in result.stdout.splitlines()
        if line.startswith("FAIL")
    }
    assert failed == {"homeserver", "smtp submission", "imap"}, result.stdout
    assert "as_token refused" in result.stdout
