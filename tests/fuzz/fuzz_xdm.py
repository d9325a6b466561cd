"""Fuzz target: a received IHE_XDM.ZIP read by cda/xdm.read_xdm (zip, METADATA.XML, CDA).

An input starting with ``PK`` is taken as the archive itself; any other input is taken as the
METADATA.XML of an otherwise valid package, so the fuzzer also reaches the metadata and CDA
code instead of stopping at the zip structure.

Run: ``python tests/fuzz/fuzz_xdm.py -atheris_runs=100000`` (see docs/testing.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fuzz_support import instrumented, main

with instrumented("mssbridge.cda", "zipfile"):
    from mssbridge.cda.xdm import PACKAGE_REFUSED, XdmLimits, XdmRefused, read_xdm

# Only now: zipfile must be imported first inside the block above to be instrumented.
import zipfile

from hostile_corpus import (
    METADATA,
    entries_of,
    good_package,
    hostile_xml,
    rezip,
    xdm_seeds,
)

LIMITS = XdmLimits()
GOOD_ENTRIES = entries_of(good_package()[0])


def as_package(data: bytes) -> bytes:
    if data.startswith(b"PK"):
        return data
    return rezip({**GOOD_ENTRIES, METADATA: data}, zipfile.ZIP_STORED)


def check(data: bytes) -> None:
    try:
        package = read_xdm(as_package(data), LIMITS)
    except XdmRefused as exc:
        if exc.user_message != PACKAGE_REFUSED or exc.code != "5.6.0":
            raise AssertionError("undocumented refusal") from None
        return
    if len(package.documents) > LIMITS.max_documents:
        raise AssertionError("more documents than the limit")
    for document in package.documents:
        parts = document.path.split("/")
        if ".." in parts or document.path.startswith("/") or "\\" in document.path:
            raise AssertionError(f"unsafe path {document.path!r}")
        if len(document.data) > LIMITS.max_entry_uncompressed:
            raise AssertionError("document larger than the limit")


if __name__ == "__main__":
    main(check, [*xdm_seeds(), GOOD_ENTRIES[METADATA], *hostile_xml().values()])
