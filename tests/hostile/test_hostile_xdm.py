"""Hostile IHE_XDM.ZIP and XML: refused precisely and quickly, never expanded nor fetched."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest
from hostile_checks import bounded
from hostile_corpus import (
    SEARCH_SECRET,
    WELL_FORMED_WITHOUT_DTD,
    XdmCase,
    good_package,
    hostile_xml,
    xdm_cases,
)

from mssbridge.cda.document import UnsafeXml, parse_xml
from mssbridge.cda.xdm import PACKAGE_REFUSED, XdmLimits, XdmPackage, XdmRefused, read_xdm
from mssbridge.directory.whitelist import WhitelistError, parse_whitelist
from mssbridge.errors import MalformedInput

pytestmark = pytest.mark.timeout(60)

CASES = {case.name: case for case in xdm_cases()}


def _read(case: XdmCase) -> XdmPackage | XdmRefused:
    limits = replace(XdmLimits(), **case.limits) if case.limits else XdmLimits()
    try:
        return bounded(lambda: read_xdm(case.data, limits))
    except XdmRefused as exc:
        return exc


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_package(name: str) -> None:
    case = CASES[name]
    outcome = _read(case)
    if isinstance(outcome, XdmRefused):
        assert case.outcome in {"refused", "either"}, f"refused: {outcome}"
        assert isinstance(outcome, MalformedInput) and outcome.code == "5.6.0"
        assert outcome.user_message == PACKAGE_REFUSED
        assert not SEARCH_SECRET.search(str(outcome).encode())
        return
    assert case.outcome in {"accepted", "either"}, "accepted a hostile package"
    for document in outcome.documents:
        assert not SEARCH_SECRET.search(document.data)  # nothing read from the machine
        assert ".." not in document.path.split("/") and not document.path.startswith("/")
        assert len(document.data) <= XdmLimits().max_entry_uncompressed
        if document.cda is not None:
            assert document.cda.title


def test_good_package_reads_back_its_document() -> None:
    package, cda = good_package()
    (document,) = read_xdm(package).documents
    assert document.data == cda and document.cda is not None
    assert document.pdf is not None and b"conserve" in document.pdf


def test_nested_zip_is_returned_as_is_never_expanded() -> None:
    (document,) = read_xdm(CASES["bomb-nested-zip-as-pdf"].data).documents
    assert document.data.startswith(b"PK\x03\x04") and len(document.data) < 100_000
    assert document.cda is None


def test_symbolic_links_are_refused_by_name() -> None:
    with pytest.raises(XdmRefused, match="link"):
        read_xdm(CASES["symlink-entry"].data)


def test_xinclude_in_metadata_is_not_followed() -> None:
    package = read_xdm(CASES["metadata-xinclude"].data)
    assert package.documents == () and package.subsets == ("IHE_XDM/SUBSET01",)


def test_zero_byte_pdf_is_kept_empty() -> None:
    (document,) = read_xdm(CASES["zero-byte-pdf"].data).documents
    assert document.data == b"" and hashlib.sha1(document.data).hexdigest()


@pytest.mark.parametrize("name", sorted(hostile_xml()))
def test_hostile_xml_for_cda_parser(name: str) -> None:
    data = hostile_xml()[name]
    try:
        root = bounded(lambda: parse_xml(data))
    except UnsafeXml:
        return
    assert name in WELL_FORMED_WITHOUT_DTD - {"deep-nesting"}, "accepted hostile XML"
    text = "".join(root.itertext()).encode()
    assert not SEARCH_SECRET.search(text)


@pytest.mark.parametrize("name", sorted(hostile_xml()))
def test_hostile_xml_for_whitelist_parser(name: str) -> None:
    data = hostile_xml()[name]
    with pytest.raises(WhitelistError) as caught:
        bounded(lambda: parse_whitelist(data))
    assert not SEARCH_SECRET.search(str(caught.value).encode())
