"""``mssbridge certs show|check|test-pki|fetch-crl``, CRL downloads and the [tls] CRL keys."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from mssbridge import config
from mssbridge.cli import app
from mssbridge.errors import ConfigError
from mssbridge.lab.pki import TestPki, generate_test_pki
from mssbridge.security import certinfo, crlfetch

runner = CliRunner()


def _write_config(
    directory: Path,
    pki: TestPki,
    *,
    cert: Path | None = None,
    crl_files: tuple[str, ...] = (),
    crl_urls: tuple[str, ...] = (),
) -> Path:
    client = pki.client(next(iter(pki.clients)))
    files = ", ".join(f'"{f}"' for f in crl_files)
    urls = ", ".join(f'"{u}"' for u in crl_urls)
    path = directory / "config.toml"
    path.write_text(
        f"""
[matrix]
homeserver_url = "http://127.0.0.1:1"
server_name = "hospital.test"
as_token = "a"
hs_token = "h"

[tls]
ca_file = "{pki.ca_bundle}"
cert_file = "{cert or client.chain}"
key_file = "{client.key}"
crl_files = [{files}]
crl_urls = [{urls}]

[mailbox]
address = "messagerie@chu-test.mssante.fr"
[mailbox.smtp]
host = "127.0.0.1"
[mailbox.imap]
host = "127.0.0.1"
"""
    )
    return path


def _cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["certs", *args])
    return result.exit_code, result.output


# -- config --------------------------------------------------------------------------------


def test_relative_crl_files_resolve_against_the_config_dir(
    test_pki: TestPki, tmp_path: Path
) -> None:
    path = _write_config(tmp_path, test_pki, crl_files=("crl/inter.crl",))
    assert config.load(path).tls.crl_files == ((tmp_path / "crl" / "inter.crl").resolve(),)


def test_one_crl_file_per_url(test_pki: TestPki, tmp_path: Path) -> None:
    path = _write_config(tmp_path, test_pki, crl_files=("a.crl",), crl_urls=("http://x/a", "b"))
    with pytest.raises(ConfigError, match="crl_urls"):
        config.load(path)


# -- show and check ------------------------------------------------------------------------


def test_show_prints_certificate_chain_and_crls(test_pki: TestPki, tmp_path: Path) -> None:
    crls = (str(test_pki.root_crl), str(test_pki.intermediate_crl))
    code, output = _cli("show", "--config", str(_write_config(tmp_path, test_pki, crl_files=crls)))
    assert code == 0, output
    for expected in ("subject", "days left", "chain      ok", "CRL ", "revocation   chain"):
        assert expected in output, output
    assert output.count("signature valid") == 2


def test_check_passes_on_good_files(test_pki: TestPki, tmp_path: Path) -> None:
    crls = (str(test_pki.intermediate_crl),)
    code, output = _cli("check", "--config", str(_write_config(tmp_path, test_pki, crl_files=crls)))
    assert code == 0 and output.startswith("ok"), output


@pytest.mark.parametrize("problem", ["expired", "rogue", "expired_crl"])
def test_check_fails(test_pki: TestPki, tmp_path: Path, problem: str) -> None:
    old = generate_test_pki(tmp_path / "old", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
    if problem == "expired_crl":
        path = _write_config(tmp_path, old, crl_files=(str(old.intermediate_crl),))
    else:
        cert = test_pki.expired_client if problem == "expired" else test_pki.rogue_client
        path = _write_config(tmp_path, test_pki, cert=cert.chain)
    code, output = _cli("check", "--config", str(path))
    assert code == 1, output
    assert {"expired": "expired", "rogue": "chain", "expired_crl": "fetch-crl"}[problem] in output


def test_check_warns_30_days_ahead(tmp_path: Path) -> None:
    ageing = generate_test_pki(tmp_path / "pki", now=dt.datetime.now(dt.UTC) - dt.timedelta(340))
    code, output = _cli("check", "--config", str(_write_config(tmp_path, ageing)))
    assert code == 0 and "WARN" in output and "expires in" in output, output


def test_test_pki_writes_a_usable_pki(tmp_path: Path) -> None:
    code, output = _cli("test-pki", "--out", str(tmp_path / "pki"))
    assert code == 0 and "tests and demos only" in output
    assert (tmp_path / "pki" / "ca-bundle.pem").is_file()


# -- fetch-crl -----------------------------------------------------------------------------


@pytest.fixture
def crl_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An HTTP server publishing the files of a directory, like the IGC-Santé CRL site."""
    published = tmp_path / "published"
    published.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(published))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", published
    server.shutdown()
    server.server_close()


def _der(pem: Path) -> bytes:
    crl = x509.load_pem_x509_crl(pem.read_bytes())
    return crl.public_bytes(serialization.Encoding.DER)


def test_fetch_crl_downloads_atomically_then_keeps_the_last_good_one(
    test_pki: TestPki, tmp_path: Path, crl_server: tuple[str, Path]
) -> None:
    base, published = crl_server
    (published / "inter.crl").write_bytes(_der(test_pki.intermediate_crl))
    target = tmp_path / "certs" / "inter.crl"
    path = _write_config(
        tmp_path, test_pki, crl_files=(str(target),), crl_urls=(f"{base}/inter.crl",)
    )
    code, output = _cli("fetch-crl", "--config", str(path))
    assert code == 0, output
    assert target.read_bytes() == _der(test_pki.intermediate_crl)
    assert list(target.parent.iterdir()) == [target], "no temporary file left behind"

    (published / "inter.crl").write_bytes(b"<html>maintenance</html>")
    code, output = _cli("fetch-crl", "--config", str(path))
    assert code == 1 and "kept the CRL in place" in output, output
    assert target.read_bytes() == _der(test_pki.intermediate_crl)

    (published / "inter.crl").unlink()
    code, output = _cli("fetch-crl", "--config", str(path))
    assert code == 1 and "404" in output and "kept" in output, output


def test_fetch_refuses_expired_foreign_or_older_crls(test_pki: TestPki, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old = generate_test_pki(tmp_path / "old", now=now - dt.timedelta(days=40))
    recent = generate_test_pki(tmp_path / "recent", now=now - dt.timedelta(days=2))
    target = tmp_path / "inter.crl"
    shutil.copyfile(test_pki.intermediate_crl, target)
    issuers = certinfo.load_certificates(test_pki.intermediate_cert)

    def serve(data: bytes) -> crlfetch.Opener:
        class Response:
            def read(self, size: int = -1) -> bytes:
                return data

            def __enter__(self) -> Response:
                return self

            def __exit__(self, *exc: object) -> None:
                return None

        return lambda url, timeout: Response()

    cases = {
        "expired": old.intermediate_crl.read_bytes(),
        "signature": recent.intermediate_crl.read_bytes(),  # same issuer name, other key
        "issued by": test_pki.root_crl.read_bytes(),
    }
    for reason, data in cases.items():
        result = crlfetch.fetch_crl("http://x/c", target, issuers, opener=serve(data))
        assert not result.updated and result.usable and reason in result.detail, result
        assert target.read_bytes() == test_pki.intermediate_crl.read_bytes()
    # An older CRL of the right issuer never replaces a newer one.
    newer_in_place = tmp_path / "recent.crl"
    shutil.copyfile(test_pki.intermediate_crl, newer_in_place)
    older = recent.intermediate_crl.read_bytes()
    recent_issuers = certinfo.load_certificates(recent.intermediate_cert)
    result = crlfetch.fetch_crl(
        "http://x/c", newer_in_place, [*issuers, *recent_issuers], opener=serve(older)
    )
    assert not result.updated and "older" in result.detail
