"""The gateway's batch rows are the ones the models would build, one mail at a time."""

from __future__ import annotations

from typing import Any, cast

from mssbridge.store import audit
from mssbridge.store.gateway_repo import (
    SMTP_UIDVALIDITY,
    AcceptedMail,
    GatewayRepo,
    _audit_values,
    _values,
)
from mssbridge.store.repo import Store
from mssbridge.store.tables import AuditAction, Inbox, RowState

NOW = 1_700_000_000.5


def _repo() -> GatewayRepo:
    return GatewayRepo(cast(Store, None), "chat.test")


def test_inbox_row_matches_the_model() -> None:
    repo = _repo()
    row = {
        **repo._inbox_base(NOW),
        "uid": 42,
        "message_id": "<m@x>",
        "sha256": "a" * 64,
        "size": 12,
        "recipients": '["@alice:chat.test"]',
    }
    model = Inbox(
        mailbox=repo.mailbox,
        uidvalidity=SMTP_UIDVALIDITY,
        uid=42,
        message_id="<m@x>",
        sha256="a" * 64,
        size=12,
        raw=None,
        state=RowState.PENDING,
        created_at=NOW,
        updated_at=NOW,
        recipients='["@alice:chat.test"]',
    )
    assert row == _values(model)


def _expected_audit(row_id: int, mail: AcceptedMail) -> dict[str, Any]:
    return _values(
        audit.row(
            AuditAction.MESSAGE_RECEIVED,
            NOW,
            direction="in",
            queue="inbox",
            row_id=row_id,
            message_id=mail.message_id,
            actor=mail.sender,
            peer=" ".join(mail.recipients),
            outcome=str(RowState.PENDING),
        )
    )


def test_audit_row_matches_the_model_with_fields_cut_to_their_columns() -> None:
    base = _values(
        audit.row(
            AuditAction.MESSAGE_RECEIVED,
            NOW,
            direction="in",
            queue="inbox",
            outcome=str(RowState.PENDING),
        )
    )
    long = AcceptedMail(
        b"x", "<" + "m" * 2000 + ">", b"", "s" * 400 + "@peer.test", ("@a:chat.test",) * 200
    )
    short = AcceptedMail(b"x", None, b"", "<>", ("@a:chat.test",))
    for row_id, mail in ((7, long), (8, short)):
        assert _audit_values(base, row_id, mail) == _expected_audit(row_id, mail)
    cut = _audit_values(base, 7, long)
    assert (len(cut["message_id"]), len(cut["actor"]), len(cut["peer"])) == (998, 320, 1000)
