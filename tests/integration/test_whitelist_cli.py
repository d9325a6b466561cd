"""`mssbridge whitelist import|show|check` on a SQLite store, as an administrator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mssbridge.cli import app

pytestmark = pytest.mark.integration

REAL_LIST = Path(__file__).resolve().parents[3] / "shared/data/listeblanchemssante-2025-02-28.xml"
READY = [
    "matrix.homeserver_url=http://127.0.0.1:8008",
    "matrix.server_name=hospital.example",
    "mailbox.address=bal@chu-test.mssante.fr",
    "mailbox.smtp.host=smtp.chu-test.mssante.fr",
    "mailbox.imap.host=imap.chu-test.mssante.fr",
]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "etc" / "config.toml"
    args = ["init", "--config", str(path)]
    for item in READY:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return path


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["whitelist", *args])
    return result.exit_code, result.output


def test_import_show_check_and_a_refused_import(config: Path, tmp_path: Path) -> None:
    code, out = run("show", "--config", str(config))
    assert code == 1 and "no whitelist imported yet" in out

    code, out = run("import", str(REAL_LIST), "--config", str(config))
    assert code == 0, out
    assert "signer not chained to a configured anchor" in out
    assert "CN=alb.mssante.fr" in out
    assert "generated  2025-02-28 15:42:07Z" in out
    assert "WARNING    the signer certificate expired on 2026-08-23" in out
    assert "6473 entries (6494 in the file), 4944 domains, 391 operator DNs" in out

    code, out = run("show", "--config", str(config))
    assert code == 0, out
    assert "counts     6473 entries, 4944 domains, 391 operator DNs" in out
    assert "older than whitelist.max_age_days (30)" in out  # generated in February 2025
    sha_line = next(line for line in out.splitlines() if line.startswith("sha256"))

    code, out = run("check", "Dr.X@15-20.mssante.fr", "--config", str(config))
    assert code == 0, out
    assert "15-20.mssante.fr: listed (" in out and "CN=smtp-1.sesan.santnet.com" in out
    assert "may leave" in out

    code, out = run("check", "someone@not-listed.example.fr", "--config", str(config))
    assert code == 1
    assert "not-listed.example.fr: not listed" in out
    assert "domaine absent de la liste blanche MSSanté" in out

    code, out = run("check", "p@patient.mssante.fr", "--config", str(config))
    assert code == 1 and "listed (" in out and "non autorisée" in out

    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(
        REAL_LIST.read_bytes().replace(b"<Nom>15-20.mssante.fr<", b"<Nom>15-21.mssante.fr<", 1)
    )
    code, out = run("import", str(tampered), "--config", str(config))
    assert code == 1
    assert "nothing imported" in out and "digest mismatch" in out
    code, out = run("show", "--config", str(config))
    assert sha_line in out  # the list in force is still the previous one
