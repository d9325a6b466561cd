"""A thread as one versioned document: request, digest, mail text, and the conformance kit."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from mssbridge.cda.document import build_cda, parse_xml, read_header
from mssbridge.cda.model import DocumentRequest, InstanceId
from mssbridge.cda.sample import DOCTOR, HOSPITAL, NURSE, PATIENT
from mssbridge.cda.transcript import find_fonts, render_transcript
from mssbridge.flows.patient import (
    document_request,
    document_root,
    message_set_root,
    thread_set_root,
)
from mssbridge.flows.thread_document import (
    ThreadItem,
    Version,
    content_digest,
    export_body,
    thread_request,
)

KIT = Path(__file__).resolve().parents[2].parent / "shared" / "conformance" / "validate-cda"
START = datetime(2025, 1, 5, 9, 0, tzinfo=UTC)
ITEMS = (
    ThreadItem("out:$a", "Dr Pierre Médecin", START, "La plaie est propre.", (), "@doc:h"),
    ThreadItem(
        "in:<m1@chu>", "Dr House (MSSanté)", START + timedelta(hours=1), "D'accord.", ("a.pdf",)
    ),
    ThreadItem("out:$b", "Claire", START + timedelta(hours=2), "", ("photo.jpg",), "@nurse:h"),
)
SET = thread_set_root("cmd-1")
V1 = Version(document_root("$export1"), SET, 1)
V2 = Version(document_root("$export2"), SET, 2, V1.document_root)


def request_for(version: Version, items: tuple[ThreadItem, ...] = ITEMS) -> DocumentRequest:
    return thread_request(
        items,
        version=version,
        patient=PATIENT,
        custodian=HOSPITAL,
        exporter=DOCTOR,
        other_authors=[NURSE, DOCTOR],
        time=START + timedelta(hours=3),
    )


def test_first_export_is_version_one_of_the_thread_set() -> None:
    request = request_for(V1)
    assert (request.version, request.replaces) == (1, None)
    assert request.set_id == InstanceId(SET) and request.document_id == InstanceId(V1.document_root)
    assert request.authors == (DOCTOR, NURSE) and request.legal_authenticator == DOCTOR
    assert [m.text for m in request.messages] == ["La plaie est propre.", "D'accord.", "(fichier)"]
    assert request.messages[1].files == ("a.pdf",)
    assert request.service_start == START and request.effective_time == START + timedelta(hours=3)


def test_a_re_export_replaces_the_previous_version() -> None:
    request = request_for(V2)
    header = read_header(parse_xml(build_cda(request, b"%PDF-1.4 stand-in")))
    assert header.set_id == InstanceId(SET) and header.version == 2
    assert header.document_id == InstanceId(V2.document_root)
    assert header.replaces == InstanceId(V1.document_root)


def test_ids_are_distinct_per_document_and_set() -> None:
    ids = {
        document_root("$e1"),
        document_root("$e2"),
        message_set_root("$e1"),
        thread_set_root("$e1"),
    }
    assert len(ids) == 4


def test_an_empty_thread_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one message"):
        request_for(V1, ())


def test_digest_names_the_messages_not_their_text() -> None:
    same_keys = tuple(ThreadItem(i.key, "x", i.time, "autre texte") for i in ITEMS)
    assert content_digest(ITEMS) == content_digest(same_keys)
    assert content_digest(ITEMS) != content_digest(ITEMS[:2])
    assert content_digest(ITEMS) != content_digest(ITEMS[::-1])


def test_export_mail_text() -> None:
    assert "3 message(s) ; version 1 du document." in export_body(3, 1)
    assert "remplace la version précédente" not in export_body(3, 1)
    assert "remplace la version précédente" in export_body(3, 2)


def test_generated_versions_pass_the_conformance_kit(tmp_path: Path) -> None:
    """Thread documents v1 and v2 (RPLC), and a per-message edit as version 2 of its message."""
    if not KIT.is_file():
        pytest.fail(f"CDA conformance kit not found at {KIT}: clone shared/ beside the repository")
    fonts = find_fonts()
    edit = document_request(
        event_id="$edit",
        set_root=message_set_root("$original"),
        version=2,
        replaces_root=document_root("$original"),
        patient=PATIENT,
        author=DOCTOR,
        custodian=HOSPITAL,
        time=START,
        text="[Message modifié] La plaie est propre.",
        files=[],
    )
    paths = []
    for name, request in (
        ("thread-v1", request_for(V1)),
        ("thread-v2", request_for(V2)),
        ("edit-v2", edit),
    ):
        path = tmp_path / f"{name}.xml"
        path.write_bytes(build_cda(request, render_transcript(request, fonts)))
        paths.append(path)
    result = subprocess.run(
        [sys.executable, str(KIT), "-q", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert result.returncode == 0, f"validate-cda failed:\n{result.stdout}\n{result.stderr}"
    assert f"{len(paths)} passed, 0 failed" in result.stdout
