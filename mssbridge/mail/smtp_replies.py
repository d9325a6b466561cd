"""Every reply the gateway's SMTP server sends, with its enhanced status code (RFC 3463)."""

from __future__ import annotations

from typing import Final

# Replies are ASCII (RFC 5321 §4.2): hence "MSSante" without its accent.

# Greeting and session (RFC 5321 §4.2, RFC 3207 for STARTTLS).
REPLY_GREETING_IDENT: Final = "ESMTP"
REPLY_OK: Final = "250 2.0.0 OK"
REPLY_SENDER_OK: Final = "250 2.1.0 Sender OK"
REPLY_RECIPIENT_OK: Final = "250 2.1.5 Recipient OK"
REPLY_QUEUED: Final = "250 2.0.0 OK: stored as {queue_id}"
REPLY_TOO_MANY_SESSIONS: Final = "421 4.7.0 Too many connections from your address, try later"
REPLY_SHUTTING_DOWN: Final = "421 4.3.2 Service shutting down, try later"

# Transport security (RFC 3207 §4; the certificate and whitelist checks are MSSanté's).
REPLY_STARTTLS_REQUIRED: Final = "530 5.7.0 Must issue a STARTTLS command first"
REPLY_CERT_REQUIRED: Final = "530 5.7.0 A client certificate is required"
REPLY_SENDER_NOT_WHITELISTED: Final = "550 5.7.1 Sender domain not in the MSSante whitelist"
REPLY_CERT_NOT_LISTED: Final = (
    "550 5.7.1 Client certificate not listed for the sender domain in the MSSante whitelist"
)
REPLY_NO_WHITELIST: Final = "451 4.7.1 Sender cannot be verified now, try later"
REPLY_NULL_SENDER: Final = "550 5.7.1 Null sender not accepted"

# Recipients (RFC 5321 §4.5.3.1.8 for the cap).
REPLY_UNKNOWN_RECIPIENT: Final = "550 5.1.1 No such user here"
REPLY_RELAY_DENIED: Final = "550 5.7.1 Relay access denied"
REPLY_TOO_MANY_RECIPIENTS: Final = "452 4.5.3 Too many recipients"

# Message data (RFC 1870 for SIZE, RFC 5321 §2.3.8 and §4.5.3.1.6 for lines).
REPLY_START_DATA: Final = "354 End data with <CR><LF>.<CR><LF>"
REPLY_TOO_LARGE: Final = "552 5.3.4 Message size exceeds fixed maximum message size"
REPLY_LINE_TOO_LONG: Final = "500 5.5.6 Line too long"
REPLY_BARE_LINE_ENDING: Final = "554 5.6.0 Bare CR or LF in message, lines must end in CRLF"
REPLY_STORE_FAILED: Final = "451 4.3.0 Temporary local problem, try later"

# Syntax and sequence.
REPLY_NEED_RECIPIENTS: Final = "503 5.5.1 Need RCPT command first"
REPLY_DATA_SYNTAX: Final = "501 5.5.4 Syntax: DATA"
REPLY_VRFY: Final = "252 2.5.0 Cannot verify the user, send the message"


def queued(queue_id: str) -> str:
    """The final reply to DATA once the message is durable in the store."""
    return REPLY_QUEUED.format(queue_id=queue_id)


def code_of(reply: str) -> str:
    """The enhanced status code of a reply ("5.7.1"), for the audit trail and metrics."""
    parts = reply.split(" ", 2)
    return parts[1] if len(parts) > 1 else parts[0]
