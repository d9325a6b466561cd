"""The exception hierarchy: permanent rejections, temporary failures and configuration errors."""

from __future__ import annotations


class BridgeError(Exception):
    """Base class of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is missing, malformed or unsafe; the message names the key."""


class Rejected(BridgeError):
    """A permanent failure: never retried.

    ``code`` is the enhanced status code (RFC 3463) or SMTP reply code that explains it;
    ``user_message`` is safe to show in a room or a mail: no content, no patient data.
    """

    def __init__(self, user_message: str, *, code: str = "5.0.0", detail: str = "") -> None:
        super().__init__(detail or user_message)
        self.code = code
        self.user_message = user_message


class TooLarge(Rejected):
    """The encoded message exceeds the configured size limit."""


class PolicyViolation(Rejected):
    """The message or its peer is refused by the MSSanté trust-space policy."""


class MalformedInput(Rejected):
    """Input that cannot be parsed; the raw item is kept (shunted) for an operator."""


class TemporaryFailure(BridgeError):
    """A failure worth retrying later (4xx reply, network error, peer down)."""
