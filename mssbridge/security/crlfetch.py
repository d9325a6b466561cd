"""Download the IGC-Santé CRLs into the configured files, keeping the last good one on failure."""

from __future__ import annotations

import datetime as dt
import http.client
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from cryptography import x509

from mssbridge.errors import ConfigError
from mssbridge.security import certinfo

MAX_CRL_BYTES = 50_000_000
DEFAULT_TIMEOUT = 30.0
CLOCK_SKEW = dt.timedelta(minutes=5)


class _Response(Protocol):
    def read(self, size: int = -1) -> bytes: ...

    def __enter__(self) -> _Response: ...

    def __exit__(self, *exc: object) -> None: ...


Opener = Callable[[str, float], _Response]


def _urlopen(url: str, timeout: float) -> _Response:
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {url}")
    # CRLs are signed: plain HTTP (what the IGC-Santé publishes) is fine.
    return urllib.request.urlopen(url, timeout=timeout)


@dataclass(frozen=True)
class FetchResult:
    """The outcome for one CRL file: replaced or kept, and whether what is there is usable."""

    url: str
    path: Path
    updated: bool
    usable: bool  # a CRL valid now is in place (new or kept)
    detail: str


def download(url: str, timeout: float = DEFAULT_TIMEOUT, opener: Opener = _urlopen) -> bytes:
    """The body at ``url``, refusing anything larger than :data:`MAX_CRL_BYTES`."""
    with opener(url, timeout) as response:
        data = response.read(MAX_CRL_BYTES + 1)
    if len(data) > MAX_CRL_BYTES:
        raise ValueError(f"larger than {MAX_CRL_BYTES} bytes")
    return data


def _current(path: Path) -> x509.CertificateRevocationList | None:
    try:
        return certinfo.load_crls(path)[0]
    except ConfigError:
        return None


def _valid_now(crl: x509.CertificateRevocationList | None, now: dt.datetime) -> bool:
    if crl is None:
        return False
    next_update = crl.next_update_utc
    return crl.last_update_utc <= now + CLOCK_SKEW and (next_update is None or now <= next_update)


def judge(
    data: bytes,
    origin: str,
    current: x509.CertificateRevocationList | None,
    issuers: Sequence[x509.Certificate],
    now: dt.datetime,
) -> x509.CertificateRevocationList:
    """The downloaded CRL if it may replace ``current``; else raise ValueError saying why."""
    try:
        crls = certinfo.parse_crls(data, origin)
    except ConfigError as exc:
        raise ValueError(str(exc)) from exc
    if len(crls) != 1:
        raise ValueError(f"{origin}: {len(crls)} CRLs where one was expected")
    crl = crls[0]
    if not _valid_now(crl, now):
        raise ValueError(f"{origin}: the downloaded CRL is expired or not yet valid")
    info = certinfo.crl_info(crl, origin, issuers)
    if info.signature == "invalid":
        raise ValueError(f"{origin}: the CRL signature does not match {info.issuer}")
    if current is not None:
        if crl.issuer != current.issuer:
            raise ValueError(
                f"{origin}: issued by {info.issuer}, but the file holds the CRL of "
                f"{current.issuer.rfc4514_string()}"
            )
        if crl.last_update_utc < current.last_update_utc:
            raise ValueError(f"{origin}: older than the CRL in place")
    return crl


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``: a reader sees the old file or the new, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def fetch_crl(
    url: str,
    path: Path,
    issuers: Sequence[x509.Certificate],
    *,
    now: dt.datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    opener: Opener = _urlopen,
) -> FetchResult:
    """Download ``url`` into ``path`` if it is a valid, newer CRL; else keep ``path`` as is.

    Ségur CONF.22: when the download or the new CRL fails, the last non-expired CRL stays.
    """
    moment = now or dt.datetime.now(dt.UTC)
    current = _current(path)
    try:
        data = download(url, timeout, opener)
        crl = judge(data, url, current, issuers, moment)
        write_atomically(path, data)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        kept = _valid_now(current, moment)
        if current is None:
            state = "no CRL in place"
        elif kept:
            state = f"kept the CRL in place, valid until {_until(current)}"
        else:
            state = f"the CRL in place expired on {_until(current)}"
        return FetchResult(url, path, False, kept, f"{exc}; {state}")
    return FetchResult(
        url, path, True, True, f"updated: {len(crl)} revoked, next update {_until(crl)}"
    )


def _until(crl: x509.CertificateRevocationList) -> str:
    next_update = crl.next_update_utc
    return f"{next_update:%Y-%m-%d %H:%M} UTC" if next_update else "no next update"
