"""SQLModel tables: queues (inbox, outbox), portals, the message map and protocol progress."""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class RowState(StrEnum):
    """Life cycle of a queued item (design §3)."""

    PENDING = "pending"
    RETRY = "retry"
    DONE = "done"
    REJECTED = "rejected"
    SHUNTED = "shunted"
    DROPPED = "dropped"


OPEN_STATES = (RowState.PENDING, RowState.RETRY)
# Why an inbox row was closed without being relayed: it is the bridge's own copy.
OWN_MAIL = "own mail"


class Meta(SQLModel, table=True):
    """Small key/value facts about the store itself (e.g. the at-rest key canary)."""

    __tablename__ = "meta"
    key: str = Field(primary_key=True, max_length=64)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class MatrixTxn(SQLModel, table=True):
    """Appservice transaction ids already stored, so a replay is acknowledged, not re-processed."""

    __tablename__ = "matrix_txn"
    txn_id: str = Field(primary_key=True, max_length=255)
    received_at: float = Field(index=True)


class QueueColumns(SQLModel):
    """Columns shared by both queues: state machine, retries and the lease of a worker."""

    state: str = Field(default=RowState.PENDING, max_length=16, index=True)
    attempts: int = 0
    next_at: float = Field(default=0.0, index=True)
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_until: float = 0.0
    created_at: float
    updated_at: float
    last_error: str | None = Field(default=None, max_length=500)


class Outbox(QueueColumns, table=True):
    """A Matrix event to act on (mail to send, invite, command), stored before the 200."""

    __tablename__ = "outbox"
    # The retention purge selects closed rows by state and age (migration 0005).
    __table_args__ = (Index("ix_outbox_state_updated_at", "state", "updated_at"),)
    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    room_id: str = Field(max_length=255, index=True)
    sender: str = Field(max_length=255)
    event_type: str = Field(max_length=64)
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    # Set just before a mail submission starts: if the process dies before recording the
    # outcome, the next attempt first looks for the bridge's own copy of that mail.
    attempt_started_at: float | None = None


class Inbox(QueueColumns, table=True):
    """A mail fetched from the mailbox, stored (sealed) before it is flagged on the server."""

    __tablename__ = "inbox"
    __table_args__ = (
        UniqueConstraint("mailbox", "uidvalidity", "uid"),
        Index("ix_inbox_state_updated_at", "state", "updated_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    mailbox: str = Field(max_length=320)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    uid: int = Field(sa_column=Column(BigInteger, nullable=False))
    message_id: str | None = Field(default=None, max_length=998, index=True)
    sha256: str = Field(max_length=64, index=True)
    size: int
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    portal_id: int | None = Field(default=None, index=True)
    # DKIM verdict, Authentication-Results style (RFC 8601): "dkim=pass header.d=… header.s=…".
    auth_results: str | None = Field(default=None, max_length=1000)
    # Gateway mode: the Matrix users the envelope recipients map to, a JSON list (migration
    # 0011); None for mail read from the mailbox.
    recipients: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


class Delivery(QueueColumns, table=True):
    """Gateway mode: one signed mail of an outbox row, to the recipients of one domain.

    Queued in the transaction that closes the outbox row (migration 0013); the sealed
    message is cleared once the delivery is closed, whatever its outcome.
    """

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("outbox_id", "domain"),
        # The retention purge selects closed rows by state and age (migration 0014).
        Index("ix_delivery_state_updated_at", "state", "updated_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    outbox_id: int = Field(index=True)
    event_id: str = Field(max_length=255)
    room_id: str = Field(max_length=255, index=True)
    domain: str = Field(max_length=255, index=True)
    sender: str = Field(max_length=320)  # the envelope sender (MAIL FROM)
    recipients: str = Field(sa_column=Column(Text, nullable=False))  # a JSON list
    message_id: str = Field(max_length=998)
    payload: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # Set just before a connection that may reach DATA: a retry after a crash may deliver a
    # second copy, with the same Message-ID (docs/gateway.md).
    attempt_started_at: float | None = None


class ImapCursor(SQLModel, table=True):
    """How far the bridge has read a mailbox folder: UIDVALIDITY and the highest stored UID."""

    __tablename__ = "imap_cursor"
    mailbox: str = Field(primary_key=True, max_length=400)
    uidvalidity: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_uid: int = Field(sa_column=Column(BigInteger, nullable=False))


class WhitelistDomain(SQLModel, table=True):
    """One entry of the MSSanté whitelist in force: a domain and one operator certificate DN."""

    __tablename__ = "whitelist_domain"
    id: int | None = Field(default=None, primary_key=True)
    domain: str = Field(max_length=255, index=True)
    operator_dn: str = Field(max_length=1024)
    description: str = Field(default="", max_length=1024)
    updated_at: float | None = None


class WhitelistImport(SQLModel, table=True):
    """One successful import of the whitelist; the newest describes the list in force."""

    __tablename__ = "whitelist_import"
    id: int | None = Field(default=None, primary_key=True)
    generated_at: float
    imported_at: float
    sha256: str = Field(max_length=64)
    signer_subject: str = Field(max_length=1024)
    signer_issuer: str = Field(max_length=1024)
    signer_not_before: float
    signer_not_after: float
    anchored: bool
    entries: int
    domains: int
    source: str = Field(default="", max_length=1024)


class DirectoryEntry(SQLModel, table=True):
    """One mailbox of the imported MSSanté directory extraction (replaced as a whole)."""

    __tablename__ = "directory_entry"
    id: int | None = Field(default=None, primary_key=True)
    mailbox_type: str = Field(max_length=8)
    address: str = Field(index=True)
    id_type: str = ""
    pp_id: str = Field(default="", index=True)
    national_id: str = Field(default="", index=True)
    structure_id: str = ""
    service: str = ""
    civility: str = ""
    family_name: str = ""
    given_name: str = ""
    name_key: str = Field(default="", index=True)  # family name, lower case, no accents
    profession_code: str = Field(default="", index=True)
    profession_label: str = ""
    know_how_label: str = ""
    structure_name: str = ""
    city: str = ""
    city_key: str = Field(default="", index=True)  # city, lower case, no accents
    postal_code: str = ""
    department: str = ""


class Portal(SQLModel, table=True):
    """One conversation: a Matrix room and the mail thread it is bridged to."""

    __tablename__ = "portal"
    id: int | None = Field(default=None, primary_key=True)
    conversation_key: str = Field(max_length=64, unique=True)
    room_id: str | None = Field(default=None, max_length=255, unique=True)
    subject: str = Field(default="", max_length=998)
    correspondents: str = Field(default="", max_length=4000)
    root_message_id: str | None = Field(default=None, max_length=998)
    last_message_id: str | None = Field(default=None, max_length=998)
    created_at: float
    # Patient context (migration 0007), sealed: never read it but through Store.patient_of.
    patient: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class MessageMap(SQLModel, table=True):
    """A Matrix event id paired with the Message-ID of the mail it was or came from."""

    __tablename__ = "message_map"
    id: int | None = Field(default=None, primary_key=True)
    portal_id: int = Field(index=True)
    event_id: str = Field(max_length=255, unique=True)
    message_id: str = Field(max_length=998, index=True)
    direction: str = Field(max_length=3)
    created_at: float = Field(index=True)


class AuditAction(StrEnum):
    """What an audit row records (metadata only: never a subject, a body or patient data)."""

    MESSAGE_SENT = "message_sent"
    MESSAGE_DELIVERED = "message_delivered"  # gateway mode: one domain's servers took it
    MESSAGE_RECEIVED = "message_received"
    MESSAGE_RELAYED = "message_relayed"
    MESSAGE_REJECTED = "message_rejected"
    MESSAGE_SHUNTED = "message_shunted"
    MESSAGE_DROPPED = "message_dropped"
    ACCESS_DENIED = "access_denied"
    PURGED = "purged"
    ADMIN_ACTION = "admin_action"


class Audit(SQLModel, table=True):
    """Append-only trail of what the bridge did and for whom; rows are never updated."""

    __tablename__ = "audit"
    id: int | None = Field(default=None, primary_key=True)
    at: float = Field(index=True)
    action: str = Field(max_length=32)
    direction: str | None = Field(default=None, max_length=3)
    queue: str | None = Field(default=None, max_length=8)
    row_id: int | None = None
    portal_id: int | None = None
    actor: str | None = Field(default=None, max_length=320)
    peer: str | None = Field(default=None, max_length=1000)
    message_id: str | None = Field(default=None, max_length=998)
    outcome: str = Field(default="", max_length=64)


class HealthDocument(SQLModel, table=True):
    """A CDA document the bridge built (migration 0009): ids and version, never content.

    ``origin`` is the Matrix event it was built for, so a retry finds the same version; the
    versions of one ``set_root`` replace each other (CDA relatedDocument RPLC).
    """

    __tablename__ = "health_document"
    __table_args__ = (UniqueConstraint("set_root", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    portal_id: int = Field(index=True)
    origin: str = Field(max_length=255, unique=True)
    set_root: str = Field(max_length=64)
    document_root: str = Field(max_length=64, unique=True)
    version: int
    replaces_root: str | None = Field(default=None, max_length=64)
    content_sha256: str = Field(max_length=64)
    messages: int
    created_at: float
