"""Delivery and read reports: what the bridge reads from them, and the notices it words."""

from __future__ import annotations

from pathlib import Path

import pytest

from mssbridge.convert.receipts import (
    DELIVERY_STATUS,
    DISPOSITION_NOTIFICATION,
    Outcome,
    RecipientReport,
    Report,
    decode_xtext,
    notice_text,
    parse_report,
)

DATA = Path(__file__).resolve().parents[1] / "data" / "mail"
SENT = "<sent42@chu-test.mssante.fr>"


def dsn(per_recipient: str, *, envelope_id: str = "", returned: str = "headers") -> bytes:
    """A DSN in the layout Postfix writes (text, delivery-status, returned headers)."""
    envid = f"Original-Envelope-Id: {envelope_id}\r\n" if envelope_id else ""
    tail = ""
    if returned == "headers":
        tail = (
            "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
            f"From: messagerie@chu-test.mssante.fr\r\nMessage-ID: {SENT}\r\nSubject: x\r\n"
        )
    elif returned == "message":
        tail = (
            "--b\r\nContent-Type: message/rfc822\r\n\r\n"
            f"From: messagerie@chu-test.mssante.fr\r\nMessage-ID: {SENT}\r\n\r\nbody\r\n"
        )
    return (
        "From: Mail Delivery System <MAILER-DAEMON@smtp.example.mssante.fr>\r\n"
        "To: messagerie@chu-test.mssante.fr\r\nSubject: Delivery report\r\n"
        "Message-Id: <dsn1@smtp.example.mssante.fr>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nThe mail system\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; smtp.example.mssante.fr\r\n{envid}\r\n"
        f"{per_recipient}\r\n{tail}--b--\r\n"
    ).encode()


def mdn(fields: str, *, extra_headers: str = "") -> bytes:
    return (
        "From: dr.house@correspondant.mssante.fr\r\nTo: messagerie@chu-test.mssante.fr\r\n"
        f"Subject: Lu\r\nMessage-ID: <mdn1@correspondant.mssante.fr>\r\n{extra_headers}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=disposition-notification; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nVotre message a ete lu.\r\n"
        f"--b\r\nContent-Type: message/disposition-notification\r\n\r\n{fields}--b--\r\n"
    ).encode()


RECIPIENT_LINE = (
    "Final-Recipient: rfc822; {final}\r\nOriginal-Recipient: rfc822;{original}\r\n"
    "Action: {action}\r\nStatus: {status}\r\n"
    "Diagnostic-Code: smtp; {diagnostic}\r\n"
)


@pytest.mark.parametrize(
    ("action", "status", "diagnostic", "outcome"),
    [
        ("delivered", "2.0.0", "250 2.0.0 Saved", Outcome.READ),
        ("relayed", "2.0.0", "250 2.0.0 Saved", Outcome.READ),
        ("expanded", "2.0.0", "250 2.0.0 Ok", Outcome.READ),
        ("failed", "5.1.1", "550 5.1.1 Mailbox does not exist", Outcome.FAILED),
        ("delayed", "4.4.1", "connect to mx: Connection refused", Outcome.DELAYED),
        ("bizarre", "2.0.0", "x", Outcome.IGNORED),
    ],
)
def test_delivery_status_per_recipient(
    action: str, status: str, diagnostic: str, outcome: Outcome
) -> None:
    line = RECIPIENT_LINE.format(
        final="DR.House@correspondant.mssante.fr",
        original="dr.house@correspondant.mssante.fr",
        action=action,
        status=status,
        diagnostic=diagnostic,
    )
    report = parse_report(dsn(line))
    assert report is not None
    assert report.report_type == DELIVERY_STATUS
    assert report.original_ids == (SENT,)
    [recipient] = report.recipients
    assert recipient == RecipientReport(
        "dr.house@correspondant.mssante.fr", outcome, action, status, diagnostic
    )


@pytest.mark.parametrize(
    ("envelope_id", "returned", "expected"),
    [
        ("<env+2B1@chu-test.mssante.fr>", "none", ("<env+1@chu-test.mssante.fr>",)),
        ("<env1@chu-test.mssante.fr>", "headers", ("<env1@chu-test.mssante.fr>", SENT)),
        ("", "message", (SENT,)),
        ("", "none", ()),
    ],
)
def test_delivery_status_names_the_original(
    envelope_id: str, returned: str, expected: tuple[str, ...]
) -> None:
    line = "Final-Recipient: rfc822; a@b.fr\r\nAction: failed\r\nStatus: 5.0.0\r\n"
    report = parse_report(dsn(line, envelope_id=envelope_id, returned=returned))
    assert report is not None and report.original_ids == expected


def test_delivery_status_with_several_recipients_and_folded_diagnostic() -> None:
    lines = (
        "Final-Recipient: rfc822; a@correspondant.mssante.fr\r\nAction: failed\r\n"
        "Status: 5.1.1\r\nDiagnostic-Code: smtp; 550 5.1.1 <a@correspondant.mssante.fr>:\r\n"
        "    Recipient address rejected\r\n\r\n"
        "Final-Recipient: rfc822; b@correspondant.mssante.fr\r\nAction: delivered\r\n"
        "Status: 2.0.0\r\n"
    )
    report = parse_report(dsn(lines))
    assert report is not None
    assert [(r.recipient, r.outcome) for r in report.recipients] == [
        ("a@correspondant.mssante.fr", Outcome.FAILED),
        ("b@correspondant.mssante.fr", Outcome.READ),
    ]
    assert report.recipients[0].diagnostic == (
        "550 5.1.1 <a@correspondant.mssante.fr>: Recipient address rejected"
    )


def test_stored_postfix_style_failure_sample() -> None:
    report = parse_report((DATA / "dsn_failure.eml").read_bytes())
    assert report is not None
    assert report.original_ids == ("<orig0001@hopital-test.mssante.fr>",)
    [line] = report.recipients
    assert (line.recipient, line.outcome, line.status) == (
        "unknown@chu-test.mssante.fr",
        Outcome.FAILED,
        "5.1.1",
    )


@pytest.mark.parametrize(
    ("disposition", "outcome", "kind", "code", "label"),
    [
        ("manual-action/MDN-sent-manually; displayed", Outcome.READ, "displayed", "", ""),
        ("automatic-action/MDN-sent-automatically; processed", Outcome.READ, "processed", "", ""),
        ("manual-action/MDN-sent-manually; deleted", Outcome.FAILED, "deleted", "", ""),
        (
            "automatic-action/MDN-sent-automatically; dispatched",
            Outcome.IGNORED,
            "dispatched",
            "",
            "",
        ),
        (
            "automatic-action/MDN-sent-automatically; processed/Error: 902^Identifiant de "
            "patient inconnu^messageErrorCondition| E^Error^errorSeverity",
            Outcome.FAILED,
            "processed",
            "902",
            "Identifiant de patient inconnu",
        ),
        (
            "automatic-action/MDN-sent-automatically; processed/error",
            Outcome.FAILED,
            "processed",
            "",
            "error",
        ),
    ],
)
def test_disposition(disposition: str, outcome: Outcome, kind: str, code: str, label: str) -> None:
    report = parse_report(
        mdn(
            "Reporting-UA: correspondant.mssante.fr; Client\r\n"
            "Final-Recipient: rfc822; dr.house@correspondant.mssante.fr\r\n"
            f"Original-Message-ID: {SENT}\r\nDisposition: {disposition}\r\n"
        )
    )
    assert report is not None and report.report_type == DISPOSITION_NOTIFICATION
    assert report.original_ids == (SENT,)
    assert report.sender == "dr.house@correspondant.mssante.fr"
    assert report.recipients == (
        RecipientReport("dr.house@correspondant.mssante.fr", outcome, kind, code, label),
    )


def test_disposition_error_field_of_rfc_3798() -> None:
    report = parse_report(
        mdn(
            "Final-Recipient: rfc822;dr.house@correspondant.mssante.fr\r\n"
            "Disposition: automatic-action/MDN-sent-automatically; failed\r\n"
            "Error: 903^INS absent\r\n",
            extra_headers=f"In-Reply-To: {SENT}\r\n",
        )
    )
    assert report is not None
    assert report.original_ids == (SENT,)  # no Original-Message-ID: the In-Reply-To
    [line] = report.recipients
    assert (line.outcome, line.status, line.diagnostic) == (Outcome.FAILED, "903", "INS absent")


@pytest.mark.parametrize(
    "raw",
    [
        b"From: a@b.fr\r\nSubject: x\r\n\r\nplain mail\r\n",
        b"From: a@b.fr\r\nContent-Type: multipart/report; report-type=feedback-report; "
        b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n',
        b"From: a@b.fr\r\nContent-Type: multipart/report; report-type=delivery-status; "
        b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nno status part\r\n--b--\r\n',
        b"\xff\xfe garbage",
    ],
)
def test_not_a_report(raw: bytes) -> None:
    assert parse_report(raw) is None


def test_diagnostic_is_printable_and_short() -> None:
    line = RECIPIENT_LINE.format(
        final="a@b.fr", original="a@b.fr", action="failed", status="5.0.0", diagnostic="x" * 500
    )
    report = parse_report(dsn(line))
    assert report is not None
    assert len(report.recipients[0].diagnostic) == 200


@pytest.mark.parametrize(
    ("report_type", "line", "expected"),
    [
        (
            DELIVERY_STATUS,
            RecipientReport("a@b.fr", Outcome.FAILED, "failed", "5.1.1", "Mailbox does not exist"),
            "⚠️ Message non remis à a@b.fr (5.1.1, Mailbox does not exist).",
        ),
        (
            DELIVERY_STATUS,
            RecipientReport("a@b.fr", Outcome.DELAYED, "delayed", "4.4.1", ""),
            "⏳ Remise retardée pour a@b.fr (4.4.1) : le serveur de messagerie réessaie.",
        ),
        (
            DISPOSITION_NOTIFICATION,
            RecipientReport("a@b.fr", Outcome.FAILED, "processed", "902", "Patient inconnu"),
            "⚠️ Le message n'a pas pu être intégré chez a@b.fr (902, Patient inconnu).",
        ),
        (
            DISPOSITION_NOTIFICATION,
            RecipientReport("a@b.fr", Outcome.FAILED, "deleted", "", ""),
            "⚠️ Accusé de lecture négatif de a@b.fr : message supprimé.",
        ),
        (DELIVERY_STATUS, RecipientReport("a@b.fr", Outcome.READ, "delivered", "2.0.0", ""), None),
        (
            DELIVERY_STATUS,
            RecipientReport("", Outcome.FAILED, "failed", "", ""),
            "⚠️ Message non remis à un destinataire.",
        ),
    ],
)
def test_notice_text(report_type: str, line: RecipientReport, expected: str | None) -> None:
    assert notice_text(Report(report_type, (), (line,)), line) == expected


@pytest.mark.parametrize(
    ("xtext", "plain"),
    [("<a+2Bb@c>", "<a+b@c>"), ("<a+3Db@c>", "<a=b@c>"), ("plain", "plain")],
)
def test_decode_xtext(xtext: str, plain: str) -> None:
    assert decode_xtext(xtext) == plain
